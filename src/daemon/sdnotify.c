/*
 * fleetqd's systemd notifications (sdnotify.h): READY=1, STOPPING=1 and
 * the watchdog, sent with libsystemd's sd_notify from one small thread.
 * The thread exists because STOPPING=1 is due inside a signal handler,
 * where sd_notify may not be called, and because the watchdog must ping
 * on a clock of its own while checking that the request loop still turns.
 */
#include "sdnotify.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

/* Bytes on the wake-up pipe. */
#define MSG_STOPPING 'S'
#define MSG_QUIT 'Q'

struct fq_sdnotify {
  const _Atomic uint64_t *heartbeat;
  bool enabled;          /* NOTIFY_SOCKET is set */
  uint64_t watchdog_us;  /* WATCHDOG_USEC for this process, 0: none */
  int pipe[2];
  pthread_t th;
  bool started;
};

/* The pipe's write end for the signal handler, which cannot be given the
 * notifier; -1 when there is none (no systemd, or destroyed). */
static volatile sig_atomic_t g_wake_fd = -1;

fq_sdnotify_t *fq_sdnotify_new(const _Atomic uint64_t *heartbeat, fq_err_t *err) {
  fq_sdnotify_t *n = calloc(1, sizeof *n);
  if (!n) {
    fq_errf(err, -ENOMEM, "out of memory for the systemd notifier");
    return NULL;
  }
  n->pipe[0] = n->pipe[1] = -1;
  n->heartbeat = heartbeat;
  const char *sock = getenv("NOTIFY_SOCKET");
  n->enabled = sock && *sock;
  if (!n->enabled) return n;
  uint64_t us = 0;
  /* > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID, if set, is us. */
  if (sd_watchdog_enabled(0, &us) > 0) n->watchdog_us = us;
  if (pipe(n->pipe) != 0 || fcntl(n->pipe[0], F_SETFL, O_NONBLOCK) != 0 ||
      fcntl(n->pipe[1], F_SETFL, O_NONBLOCK) != 0 || fcntl(n->pipe[0], F_SETFD, FD_CLOEXEC) != 0 ||
      fcntl(n->pipe[1], F_SETFD, FD_CLOEXEC) != 0) {
    int e = -errno;
    fq_errf(err, e, "cannot create the systemd notifier's pipe: %s", fq_strerror(e));
    fq_sdnotify_destroy(&n);
    return NULL;
  }
  g_wake_fd = n->pipe[1];
  return n;
}

int fq_sdnotify_enabled(const fq_sdnotify_t *n) { return n && n->enabled; }

int fq_sdnotify_heartbeat_ms(const fq_sdnotify_t *n) {
  if (!n || !n->watchdog_us) return 0;
  uint64_t ms = n->watchdog_us / 4000;
  if (ms > 1000) ms = 1000;
  if (ms < 10) ms = 10;
  return (int)ms;
}

/* Ping every third of the watchdog period, but only when the heartbeat
 * moved since the previous check: a request loop that hangs lets the
 * watchdog expire, which is the point.  Said once in the log, so that the
 * restart that follows has a cause next to it. */
static void watchdog_tick(fq_sdnotify_t *n, uint64_t *last_hb, bool *stalled) {
  uint64_t hb = n->heartbeat ? atomic_load(n->heartbeat) : 0;
  if (n->heartbeat && hb == *last_hb) {
    if (!*stalled)
      fq_warn("fleetqd", "request loop has not turned for %llu ms: no watchdog ping "
                         "(systemd restarts fleetqd after WatchdogSec)",
              (unsigned long long)(n->watchdog_us / 3000));
    *stalled = true;
    return;
  }
  *last_hb = hb;
  *stalled = false;
  sd_notify(0, "WATCHDOG=1");
}

static void *notify_main(void *arg) {
  fq_sdnotify_t *n = arg;
  int period_ms = n->watchdog_us ? (int)(n->watchdog_us / 3000) : -1;
  if (n->watchdog_us && period_ms < 1) period_ms = 1;
  int64_t next = fq_mono_ns() / 1000000 + (period_ms > 0 ? period_ms : 0);
  uint64_t last_hb = n->heartbeat ? atomic_load(n->heartbeat) : 0;
  bool stalled = false;
  for (;;) {
    int wait = -1;
    if (period_ms > 0) {
      int64_t left = next - fq_mono_ns() / 1000000;
      wait = left > 0 ? (int)left : 0;
    }
    struct pollfd p = {n->pipe[0], POLLIN, 0};
    int r = poll(&p, 1, wait);
    if (r < 0 && errno != EINTR) break;
    if (r > 0) {
      char c[16];
      ssize_t k = read(n->pipe[0], c, sizeof c);
      for (ssize_t i = 0; i < k; i++) {
        if (c[i] == MSG_QUIT) return NULL;
        if (c[i] == MSG_STOPPING)
          sd_notify(0, "STOPPING=1\nSTATUS=stopping: draining the requests in flight");
      }
    }
    if (period_ms > 0 && fq_mono_ns() / 1000000 >= next) {
      watchdog_tick(n, &last_hb, &stalled);
      next += period_ms;
      /* After a long stall (a stopped process), do not ping in a burst. */
      if (next < fq_mono_ns() / 1000000) next = fq_mono_ns() / 1000000 + period_ms;
    }
  }
  return NULL;
}

int fq_sdnotify_ready(fq_sdnotify_t *n, const char *status) {
  if (!n || !n->enabled) return 0;
  char msg[512];
  snprintf(msg, sizeof msg, "READY=1\nSTATUS=%s", status ? status : "ready");
  int rc = sd_notify(0, msg);
  if (rc < 0)
    fq_warn("fleetqd", "systemd notification READY=1 failed: %s", fq_strerror(rc));
  if (n->started) return 0;
  rc = pthread_create(&n->th, NULL, notify_main, n);
  if (rc) {
    fq_warn("fleetqd", "cannot start the systemd notifier thread: %s", fq_strerror(-rc));
    return -rc;
  }
  n->started = true;
  if (n->watchdog_us)
    fq_info("fleetqd", "systemd watchdog: a ping every %llu ms while the request loop turns",
            (unsigned long long)(n->watchdog_us / 3000));
  return 0;
}

void fq_sdnotify_stopping(void) {
  int fd = g_wake_fd;
  if (fd < 0) return;
  char c = MSG_STOPPING;
  ssize_t w = write(fd, &c, 1);
  (void)w; /* a full pipe already holds a wake-up */
}

void fq_sdnotify_destroy(fq_sdnotify_t **np) {
  fq_sdnotify_t *n = np ? *np : NULL;
  if (!n) return;
  g_wake_fd = -1;
  if (n->started) {
    char c = MSG_QUIT;
    /* Blocking is fine here: the thread drains the pipe. */
    int fl = fcntl(n->pipe[1], F_GETFL);
    if (fl >= 0) fcntl(n->pipe[1], F_SETFL, fl & ~O_NONBLOCK);
    ssize_t w = write(n->pipe[1], &c, 1);
    (void)w;
    pthread_join(n->th, NULL);
  }
  if (n->pipe[0] >= 0) close(n->pipe[0]);
  if (n->pipe[1] >= 0) close(n->pipe[1]);
  free(n);
  *np = NULL;
}
