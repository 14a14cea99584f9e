/*
 * fleetqd under systemd (packaging/fleetqd.service, Type=notify): the
 * service notification protocol through libsystemd's sd_notify.
 *
 *   READY=1     once every shard is open and recovered and the sockets are
 *               bound (where "fleetqd: ready" is printed);
 *   STOPPING=1  as soon as SIGTERM / SIGINT starts a stop, so that systemd
 *               shows the drain as "deactivating";
 *   WATCHDOG=1  every WatchdogSec/3 while the request loop (the ingress,
 *               in the main thread) keeps turning: a loop that stops
 *               turning stops the pings, and systemd restarts fleetqd.
 *
 * Started by anything else (no NOTIFY_SOCKET in the environment) every
 * call here does nothing and no thread is created: fleetqd runs the same
 * with or without systemd.
 */
#ifndef FQ_SDNOTIFY_H
#define FQ_SDNOTIFY_H

#include <stdatomic.h>
#include <stdint.h>

#include "fleetq/error.h"

typedef struct fq_sdnotify fq_sdnotify_t;

/* Prepare the notifier.  `heartbeat` (borrowed, must outlive the
 * notifier; may be NULL) is a counter the request loop increments at
 * least every fq_sdnotify_heartbeat_ms(); the watchdog pings only while
 * it moves.  Creates
 * the notifier's wake-up pipe; the thread starts with fq_sdnotify_ready().
 * Returns NULL with err set (-errno) when the pipe cannot be made.  Call
 * before installing the SIGTERM handler that calls fq_sdnotify_stopping(). */
fq_sdnotify_t *fq_sdnotify_new(const _Atomic uint64_t *heartbeat, fq_err_t *err);

/* Whether fleetqd runs as a systemd notify service (NOTIFY_SOCKET set). */
int fq_sdnotify_enabled(const fq_sdnotify_t *n);

/* How often the request loop must move the heartbeat for the watchdog:
 * a quarter of WatchdogSec (at most 1000 ms, at least 10 ms), or 0 when
 * systemd asked for no watchdog (then no heartbeat is needed at all). */
int fq_sdnotify_heartbeat_ms(const fq_sdnotify_t *n);

/* Send READY=1 with STATUS=<status>, and start the notifier thread when
 * systemd asked for a watchdog (WATCHDOG_USEC) or is listening at all.
 * Returns 0, or -errno when the thread cannot start (the daemon goes on:
 * systemd then restarts it when the watchdog expires, or never needed it).
 * No-op without systemd. */
int fq_sdnotify_ready(fq_sdnotify_t *n, const char *status);

/* Tell systemd a stop has begun (STOPPING=1 and a STATUS line), from the
 * notifier thread.  Async-signal-safe: one write(2) to a pipe; call it
 * from the SIGTERM / SIGINT handler.  No-op without systemd or before
 * fq_sdnotify_new(). */
void fq_sdnotify_stopping(void);

/* Stop the thread and release everything; NULLs *n; accepts NULL. */
void fq_sdnotify_destroy(fq_sdnotify_t **n);

#endif
