/*
 * fq_http_t: an asynchronous HTTP client on one libcurl multi handle, meant
 * to be owned by one shard thread and driven from that thread's poll loop.
 *
 * A shard submits requests (fq_http_request / fq_http_post_json /
 * fq_http_get) and gets one completion callback per request.  Nothing here
 * blocks: curl's sockets live in an epoll set whose one descriptor the
 * caller adds to its zmq_poll() (zmq_pollitem_t accepts raw file
 * descriptors), so one loop serves an inproc ZeroMQ socket and thousands of
 * HTTP transfers at once, and only ready sockets cost work:
 *
 *     for (;;) {
 *       items[0] = inproc socket;
 *       int n = fq_http_fds(h, items + 1, max - 1);      // curl's sockets
 *       long t = fq_http_timeout_ms(h);                   // curl's timer
 *       zmq_poll(items, 1 + n, t < my_timer ? t : my_timer);
 *       fq_http_perform(h, items + 1, n);                 // runs callbacks
 *       ... handle the inproc socket ...
 *     }
 *
 * Transport policy, fixed here so no caller can weaken it: TLS peer and
 * host verification always on (an extra CA file is trusted *in addition to*
 * the system store, for the simulator's throwaway CA); redirects are never
 * followed (a 3xx is returned as is); only http and https; keep-alive and
 * HTTP/2 over TLS with multiplexing where the server offers it; a short DNS
 * cache (Fleet API hosts change address without notice); connect, total and
 * low-speed timeouts; response bodies capped; curl's verbose output stays
 * off so an Authorization header can never reach a log.
 *
 * Thread rules: an fq_http_t and every request on it belong to the thread
 * that created it; no function here may be called from another thread.
 * Different threads may each own their own fq_http_t (libcurl's global init
 * is done once, thread-safely, by the first fq_http_new()).  Callbacks run
 * inside fq_http_perform() on the owner thread; a callback may submit or
 * cancel requests but must not destroy the fq_http_t.
 */
#ifndef FQ_HTTP_H
#define FQ_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "fleetq/error.h"

typedef struct fq_http fq_http_t;

/* Options for fq_http_new(); zero fields take the defaults in brackets. */
typedef struct fq_http_opts {
  const char *ca_file;          /* extra trusted CA (PEM), or NULL */
  long connect_timeout_ms;      /* [5000] TCP + TLS handshake */
  long total_timeout_ms;        /* [30000] whole request, per request overridable */
  long low_speed_limit;         /* [1] bytes/s below which ... */
  long low_speed_time_s;        /* [20] ... for this long aborts the transfer */
  size_t max_body;              /* [1 MiB] response body cap */
  unsigned max_inflight;        /* [1024] transfers in flight at once */
  unsigned max_host_conns;      /* [0 = no limit] connections per host */
  long dns_cache_s;             /* [30] DNS cache lifetime */
  long max_idle_conn_s;         /* [30] an idle connection older than this is
                                   not reused (servers close idle ones; reusing
                                   one as it closes turns a send into an
                                   unknown outcome) */
  const char *user_agent;       /* ["fleetq/<version>"] */
} fq_http_opts_t;

/* What happened to a request, from the point of view of "did the server
 * possibly act on it".  The classification only looks at the transport;
 * what the status code means is fleetapi.c's business. */
typedef enum fq_http_outcome {
  /* A full response arrived: status, headers and body are valid. */
  FQ_HTTP_COMPLETE = 0,
  /* The request never left: DNS, TCP connect or TLS handshake failed
   * (including an untrusted certificate) or the connect timed out.  Safe
   * to retry: the server cannot have acted on it. */
  FQ_HTTP_NOT_SENT,
  /* The connection was up and the request may have been sent, then the
   * transfer failed (timeout, reset, protocol error) before a complete
   * response: the server may or may not have acted. */
  FQ_HTTP_UNKNOWN,
  /* The response body exceeded max_body: the server answered, but we do
   * not know what it said.  Also an unknown outcome. */
  FQ_HTTP_TRUNCATED,
} fq_http_outcome_t;

/* Short name of an outcome ("complete", "not_sent", "unknown",
 * "truncated"); static. */
const char *fq_http_outcome_name(fq_http_outcome_t o);

/* Why a TLS handshake was refused (outcome NOT_SENT, curl's "peer failed
 * verification"): the certificate chain is not trusted (no CA vouches for
 * it: the system store, --ca-file), or it is trusted but issued for other
 * names than the host the URL names.  The two need different fixes. */
typedef enum fq_http_tls {
  FQ_HTTP_TLS_OK = 0,          /* no certificate problem (or no TLS) */
  FQ_HTTP_TLS_UNTRUSTED,
  FQ_HTTP_TLS_NAME_MISMATCH,
} fq_http_tls_t;

/* Caps of the response headers kept (longer values are cut). */
#define FQ_HTTP_HDR_MAX 256

/* The completion passed to a callback; everything in it is borrowed and
 * valid only until the callback returns. */
typedef struct fq_http_resp {
  uint64_t id;                 /* the id fq_http_request() returned */
  fq_http_outcome_t outcome;
  long status;                 /* HTTP status, 0 when none was received */
  int http_version;            /* 10, 11, 20 or 30 for the answer; 0 when none */
  fq_http_tls_t tls;           /* a refused certificate: which problem */
  const uint8_t *body;         /* NUL-terminated for convenience; may be
                                  partial unless outcome is COMPLETE */
  size_t body_len;
  /* Selected response headers, "" when absent. */
  char retry_after[FQ_HTTP_HDR_MAX];
  char alt_svc[FQ_HTTP_HDR_MAX];
  char ratelimit_reset[FQ_HTTP_HDR_MAX];
  char location[FQ_HTTP_HDR_MAX];
  /* Fleet API's account budget, sent on every answer (success included):
   * with RateLimit-Reset they let the dispatcher slow down before a 429. */
  char ratelimit_limit[FQ_HTTP_HDR_MAX];
  char ratelimit_remaining[FQ_HTTP_HDR_MAX];
  /* Transport detail when outcome != COMPLETE: code FQ_EHTTP (or
   * FQ_ETOOLARGE for TRUNCATED) and curl's text, its detailed message when
   * it gave one ("SSL: no alternative certificate subject name matches
   * target host name ...").  Never holds secrets. */
  fq_err_t err;
  int curl_code;               /* CURLcode, for logs and tests */
  int64_t elapsed_us;          /* submit -> completion */
} fq_http_resp_t;

typedef void (*fq_http_cb)(void *ud, const fq_http_resp_t *resp);

typedef enum fq_http_method { FQ_HTTP_GET = 0, FQ_HTTP_POST } fq_http_method_t;

/* One request.  All strings and the body are copied by fq_http_request(),
 * so the caller's memory may go away right after the call. */
typedef struct fq_http_req {
  fq_http_method_t method;
  const char *url;             /* http:// or https:// */
  const char *bearer;          /* access token, or NULL for no Authorization */
  const char *content_type;    /* every request: defaults to application/json */
  const void *body;            /* POST body (may be NULL with len 0) */
  size_t body_len;
  long timeout_ms;             /* 0 = the handle's total_timeout_ms */
} fq_http_req_t;

/* Create a client.  Loads and checks ca_file now (so a bad file is a clear
 * start-up error).  Returns NULL with err set (FQ_ECONFIG for a bad CA
 * file, FQ_EHTTP when libcurl refuses, -ENOMEM). */
fq_http_t *fq_http_new(const fq_http_opts_t *opts, fq_err_t *err);

/* Abort every transfer (their callbacks do NOT fire), close connections
 * and free h; NULLs *hp; accepts NULL. */
void fq_http_destroy(fq_http_t **hp);

/* Start a request.  On success returns 0 and sets *id (never 0); cb will
 * run exactly once, later, from fq_http_perform() (never from inside this
 * call).  On failure cb never runs: FQ_EBUSY when max_inflight transfers
 * are already running (retry after a completion), FQ_EBADPARAM for a bad
 * URL or scheme, FQ_ETOOLARGE for an oversized token or header, -ENOMEM. */
int fq_http_request(fq_http_t *h, const fq_http_req_t *req, fq_http_cb cb, void *ud,
                    uint64_t *id, fq_err_t *err);

/* Shorthands: POST with Content-Type application/json, and GET. */
int fq_http_post_json(fq_http_t *h, const char *url, const char *bearer, const void *body,
                      size_t len, fq_http_cb cb, void *ud, uint64_t *id, fq_err_t *err);
int fq_http_get(fq_http_t *h, const char *url, const char *bearer, fq_http_cb cb, void *ud,
                uint64_t *id, fq_err_t *err);

/* Abort a running request; its callback will not run.  Aborting a request
 * that may already have been sent leaves its outcome unknown: the caller
 * must treat it so.  Returns 0 or FQ_ENOTFOUND (finished or never was). */
int fq_http_cancel(fq_http_t *h, uint64_t id);

/* Number of requests started and not yet completed or cancelled. */
unsigned fq_http_inflight(const fq_http_t *h);

/* Fill the poll items the owner must watch for this client: always one
 * item today (an epoll descriptor holding all of curl's sockets, POLLIN),
 * whatever the number of transfers.  Writes at most max items and returns
 * the number needed (fq_http_nfds() tells it beforehand). */
int fq_http_fds(const fq_http_t *h, zmq_pollitem_t *items, int max);
int fq_http_nfds(const fq_http_t *h);

/* Number of sockets (connections) curl has open right now; for stats. */
int fq_http_nsockets(const fq_http_t *h);

/* How long the caller may wait before fq_http_perform() must run even if
 * no socket is ready: -1 = no timer (only sockets matter), 0 = now. */
long fq_http_timeout_ms(const fq_http_t *h);

/* Let curl act on its ready sockets and on an expired timer, then run the
 * callbacks of every finished request.  items/n are what fq_http_fds()
 * filled and zmq_poll() updated; they may be NULL / 0 (readiness is read
 * from the epoll set directly, without waiting, so calling this after any
 * wake-up is correct).  Returns the number of callbacks run, or FQ_EHTTP /
 * -errno if the multi handle or epoll failed (err set). */
int fq_http_perform(fq_http_t *h, const zmq_pollitem_t *items, int n, fq_err_t *err);

/* Convenience loop step for programs with nothing else to poll (tests,
 * benchmarks, CLI): waits up to max_wait_ms on curl's sockets and timer,
 * then performs.  Returns like fq_http_perform(). */
int fq_http_run_once(fq_http_t *h, long max_wait_ms, fq_err_t *err);

#endif
