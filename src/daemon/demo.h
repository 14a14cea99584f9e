/*
 * fleetqd --demo: an embedded fleetsim (demo account, cars, a Powerwall
 * site) as Fleet API, and a scripted tour printed as a live status stream.
 * Used by tools/fleetqd/main.c only.
 */
#ifndef FQ_DEMO_H
#define FQ_DEMO_H

#include "config.h"
#include "fleetq/error.h"

typedef struct fq_demo fq_demo_t;

/* Before the daemon starts: make a demo data directory (unless --data was
 * given), a fleet key, start the simulator on an ephemeral loopback port,
 * store the demo accounts, and point cfg at all of it (key, allowed host,
 * pairing domain, short wake/backoff intervals).  0 or an error with err. */
int fq_demo_prepare(fq_config_t *cfg, fq_demo_t **out, fq_err_t *err);

/* Once the daemon serves: run the tour in a thread; when it is over it
 * writes a byte to stop_fd (the daemon's stop pipe). 0 or -errno. */
int fq_demo_start_tour(fq_demo_t *d, int stop_fd);

/* Wait for the tour to end; 0 when every step ended as expected. */
int fq_demo_result(fq_demo_t *d);

/* Join the tour, stop the simulator, free.  NULLs *dp; accepts NULL. */
void fq_demo_destroy(fq_demo_t **dp);

#endif
