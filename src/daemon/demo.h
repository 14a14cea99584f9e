/*
 * fleetqd --demo: a fleetsim child process (demo account, cars, a Powerwall
 * site) as Fleet API, and a scripted tour printed as a live status stream.
 * Used by tools/fleetqd/main.c only.  The fleetsim program is taken from
 * $FQ_FLEETSIM, else from the directory of the fleetqd executable.
 */
#ifndef FQ_DEMO_H
#define FQ_DEMO_H

#include "config.h"
#include "fleetq/error.h"

typedef struct fq_demo fq_demo_t;

/* Before the daemon starts (call it before any thread runs: it forks):
 * make a demo data directory (unless --data was given), a fleet key and
 * DIR/fleetsim.json, start fleetsim with it on an ephemeral loopback port
 * and read the address it prints, store the demo accounts, and point cfg
 * at all of it (key, allowed host, pairing domain, short wake/backoff
 * intervals).  The child dies with this process even if
 * fq_demo_destroy() is never called.  0 or an error with err (then no
 * child is left running). */
int fq_demo_prepare(fq_config_t *cfg, fq_demo_t **out, fq_err_t *err);

/* Once the daemon serves: run the tour in a thread; when it is over it
 * writes a byte to stop_fd (the daemon's stop pipe). 0 or -errno. */
int fq_demo_start_tour(fq_demo_t *d, int stop_fd);

/* Wait for the tour to end; 0 when every step ended as expected. */
int fq_demo_result(fq_demo_t *d);

/* Join the tour, stop the simulator (SIGTERM; SIGKILL if it has not
 * exited after 5 s; an unclean exit is reported on stderr), free.  NULLs
 * *dp; accepts NULL. */
void fq_demo_destroy(fq_demo_t **dp);

#endif
