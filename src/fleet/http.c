/*
 * The shard's HTTP client: one libcurl multi handle driven through
 * curl_multi_socket_action(), with curl's sockets and timer handed to the
 * owner's zmq_poll().  See http.h for the policy and the thread rules.
 *
 * Whether a failed request "may have been sent" decides between a safe
 * retry and an unknown outcome, so it is tracked directly: curl's
 * pre-request callback runs once a connection is ready, just before the
 * request is written, and from then on the request counts as sent.  curl
 * silently re-sends a request when a reused connection turns out dead; that
 * second pre-request call is refused, so a command can never go out twice
 * behind our back (the transfer ends as an unknown outcome instead).
 */
#include "http.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "util.h"

#define TOKEN_MAX 16384 /* an access token longer than this is refused */

typedef struct xfer {
  CURL *easy;
  fq_http_t *h;
  uint64_t id;            /* 0 when the slot is free */
  uint32_t gen;
  uint32_t next_free;     /* free list link (slot index + 1, 0 = end) */
  fq_http_cb cb;
  void *ud;
  /* Kept with the slot from one request to the next, so a request costs
   * no allocation once the slot has been used: the easy handle (options
   * that never change are set once), the header list (rebuilt only when
   * the method, content type or token differs) and both bodies. */
  bool configured;
  struct curl_slist *hdrs;
  fq_http_method_t hdr_method;
  char hdr_ctype[64];
  char *hdr_bearer;       /* copy of the token in hdrs (secret), or NULL */
  fq_buf_t body;
  bool sent;              /* curl started sending: the server may have it */
  char errbuf[CURL_ERROR_SIZE]; /* curl's detailed message of a failure */
  bool truncated;
  fq_buf_t resp;
  int64_t start_ns;
} xfer_t;

struct fq_http {
  CURLM *multi;
  fq_http_opts_t o;
  char *user_agent;
  STACK_OF(X509) *extra_ca;
  xfer_t *slots;
  uint32_t free_head;     /* slot index + 1, 0 = none free */
  unsigned inflight;
  int epfd;               /* epoll set of curl's sockets, the one fd the owner polls */
  int nsocks;             /* sockets curl currently has */
  int64_t timer_deadline_ns; /* -1 = no timer */
  fq_err_t *cb_err;       /* where the socket callback records ENOMEM */
  fq_buf_t spare;         /* swapped with a slot's response body in finish() */
  /* Transfers curl reported done in one perform, finished after all are
   * read (fq_http_perform): one entry per slot. */
  struct done_ent {
    xfer_t *x;
    uint64_t id;
    CURLcode code;
  } *done;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_OK;

static void global_init(void) { global_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

const char *fq_http_outcome_name(fq_http_outcome_t o) {
  switch (o) {
    case FQ_HTTP_COMPLETE: return "complete";
    case FQ_HTTP_NOT_SENT: return "not_sent";
    case FQ_HTTP_UNKNOWN: return "unknown";
    case FQ_HTTP_TRUNCATED: return "truncated";
  }
  return "?";
}

/* ---- curl callbacks ---------------------------------------------------- */

/* Keep curl's sockets in our epoll set.  The owner polls only the epoll
 * descriptor, so its poll set stays one item whatever the number of
 * transfers, and fq_http_perform() touches only the ready sockets.
 * Level-triggered, as curl expects. */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
  fq_http_t *h = userp;
  (void)easy;
  if (what == CURL_POLL_REMOVE) {
    if (socketp) {
      epoll_ctl(h->epfd, EPOLL_CTL_DEL, s, NULL); /* may already be closed: fine */
      curl_multi_assign(h->multi, s, NULL);
      h->nsocks--;
    }
    return 0;
  }
  struct epoll_event ev = {.events = 0, .data.fd = s};
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) ev.events |= EPOLLIN;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) ev.events |= EPOLLOUT;
  int op = socketp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  if (epoll_ctl(h->epfd, op, s, &ev) != 0) {
    /* A descriptor number reused behind our back: fix up and go on. */
    int alt = op == EPOLL_CTL_ADD ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(h->epfd, alt, s, &ev) != 0) return -1; /* curl fails the transfer */
  }
  if (!socketp) {
    curl_multi_assign(h->multi, s, (void *)1);
    h->nsocks++;
  }
  return 0;
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp) {
  fq_http_t *h = userp;
  (void)multi;
  h->timer_deadline_ns = timeout_ms < 0 ? -1 : fq_mono_ns() + (int64_t)timeout_ms * 1000000;
  return 0;
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *ud) {
  xfer_t *x = ud;
  size_t n = size * nmemb;
  if (x->resp.len + n > x->h->o.max_body) {
    x->truncated = true;
    return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
  }
  if (fq_buf_append(&x->resp, p, n) != 0) return 0;
  return n;
}

/* curl is about to send the request on a connection (new or reused).  From
 * here on the server may get it: the request counts as sent.  curl calls
 * this again when it wants to re-send the request by itself (a reused
 * keep-alive connection found dead, an HTTP/2 stream refused); that second
 * send is refused, because the first copy may have reached the server and
 * a silent duplicate of a command is exactly what must not happen.  The
 * transfer then ends as an unknown outcome instead. */
static int on_prereq(void *ud, char *conn_primary_ip, char *conn_local_ip, int conn_primary_port,
                     int conn_local_port) {
  xfer_t *x = ud;
  (void)conn_primary_ip;
  (void)conn_local_ip;
  (void)conn_primary_port;
  (void)conn_local_port;
  if (x->sent) return CURL_PREREQFUNC_ABORT;
  x->sent = true;
  return CURL_PREREQFUNC_OK;
}

/* Add the extra CA certificates to this connection's trust store, on top
 * of the system store curl already loaded.  Adding a certificate that is
 * already present is harmless. */
static CURLcode on_ssl_ctx(CURL *easy, void *sslctx, void *ud) {
  fq_http_t *h = ud;
  (void)easy;
  X509_STORE *st = SSL_CTX_get_cert_store((SSL_CTX *)sslctx);
  if (!st) return CURLE_SSL_CERTPROBLEM;
  for (int i = 0; i < sk_X509_num(h->extra_ca); i++) X509_STORE_add_cert(st, sk_X509_value(h->extra_ca, i));
  ERR_clear_error();
  return CURLE_OK;
}

/* ---- life cycle -------------------------------------------------------- */

static int load_ca(fq_http_t *h, const char *path, fq_err_t *err) {
  int rc = 0;
  BIO *bio = BIO_new_file(path, "r");
  if (!bio) return fq_errf(err, FQ_ECONFIG, "CA file %s: cannot open", path);
  h->extra_ca = sk_X509_new_null();
  if (!h->extra_ca) {
    rc = -ENOMEM;
    goto out;
  }
  X509 *c;
  while ((c = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
    if (!sk_X509_push(h->extra_ca, c)) {
      X509_free(c);
      rc = -ENOMEM;
      goto out;
    }
    if (sk_X509_num(h->extra_ca) > 64) {
      rc = fq_errf(err, FQ_ECONFIG, "CA file %s: more than 64 certificates", path);
      goto out;
    }
  }
  ERR_clear_error(); /* the loop ends on a "no start line" error */
  if (sk_X509_num(h->extra_ca) == 0)
    rc = fq_errf(err, FQ_ECONFIG, "CA file %s: no PEM certificate in it", path);
out:
  BIO_free(bio);
  return rc;
}

fq_http_t *fq_http_new(const fq_http_opts_t *opts, fq_err_t *err) {
  fq_http_t *h = NULL;
  pthread_once(&global_once, global_init);
  if (global_rc != CURLE_OK) {
    fq_errf(err, FQ_EHTTP, "curl_global_init: %s", curl_easy_strerror(global_rc));
    return NULL;
  }
  h = calloc(1, sizeof *h);
  if (!h) goto nomem;
  h->epfd = -1;
  if (opts) h->o = *opts;
  if (h->o.connect_timeout_ms <= 0) h->o.connect_timeout_ms = 5000;
  if (h->o.total_timeout_ms <= 0) h->o.total_timeout_ms = 30000;
  if (h->o.low_speed_limit <= 0) h->o.low_speed_limit = 1;
  if (h->o.low_speed_time_s <= 0) h->o.low_speed_time_s = 20;
  if (h->o.max_body == 0) h->o.max_body = 1u << 20;
  if (h->o.max_inflight == 0) h->o.max_inflight = 1024;
  if (h->o.dns_cache_s <= 0) h->o.dns_cache_s = 30;
  if (h->o.max_idle_conn_s <= 0) h->o.max_idle_conn_s = 30;
  h->user_agent = strdup(h->o.user_agent ? h->o.user_agent : "fleetq/" FQ_VERSION);
  if (!h->user_agent) goto nomem;
  h->o.user_agent = h->user_agent;
  h->o.ca_file = NULL; /* not kept: the certificates are loaded now */
  h->timer_deadline_ns = -1;
  h->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (h->epfd < 0) {
    fq_errf(err, -errno, "epoll_create1: %s", fq_strerror(-errno));
    goto fail;
  }
  if (opts && opts->ca_file && load_ca(h, opts->ca_file, err) != 0) goto fail;

  h->slots = calloc(h->o.max_inflight, sizeof *h->slots);
  h->done = calloc(h->o.max_inflight, sizeof *h->done);
  if (!h->slots || !h->done) goto nomem;
  for (uint32_t i = 0; i < h->o.max_inflight; i++) {
    h->slots[i].h = h;
    h->slots[i].next_free = i + 2 <= h->o.max_inflight ? i + 2 : 0;
  }
  h->free_head = 1;

  h->multi = curl_multi_init();
  if (!h->multi) {
    fq_errf(err, FQ_EHTTP, "curl_multi_init failed");
    goto fail;
  }
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
  curl_multi_setopt(h->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  /* Keep enough idle connections that a burst does not reconnect. */
  curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)h->o.max_inflight);
  if (h->o.max_host_conns)
    curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)h->o.max_host_conns);
  return h;

nomem:
  fq_errf(err, -ENOMEM, "out of memory");
fail:
  fq_http_destroy(&h);
  return NULL;
}

/* The header list holds the bearer token: wipe before freeing. */
static void drop_headers(xfer_t *x) {
  for (struct curl_slist *s = x->hdrs; s; s = s->next)
    if (s->data) OPENSSL_cleanse(s->data, strlen(s->data));
  curl_slist_free_all(x->hdrs);
  x->hdrs = NULL;
  if (x->hdr_bearer) {
    OPENSSL_cleanse(x->hdr_bearer, strlen(x->hdr_bearer));
    free(x->hdr_bearer);
    x->hdr_bearer = NULL;
  }
}

static void xfer_release(fq_http_t *h, xfer_t *x) {
  /* The easy handle, header list and buffers stay with the slot for the
   * next request (see xfer_t). */
  if (x->easy) curl_multi_remove_handle(h->multi, x->easy);
  /* Bodies may carry tokens (an OAuth refresh and its answer). */
  if (x->body.len) OPENSSL_cleanse(x->body.data, x->body.len);
  if (x->resp.len) OPENSSL_cleanse(x->resp.data, x->resp.len);
  fq_buf_reset(&x->body);
  fq_buf_reset(&x->resp);
  x->id = 0;
  x->cb = NULL;
  x->next_free = h->free_head;
  h->free_head = (uint32_t)(x - h->slots) + 1;
  h->inflight--;
}

void fq_http_destroy(fq_http_t **hp) {
  if (!hp || !*hp) return;
  fq_http_t *h = *hp;
  if (h->slots) {
    for (uint32_t i = 0; i < h->o.max_inflight; i++)
      if (h->slots[i].id) xfer_release(h, &h->slots[i]);
  }
  if (h->multi) curl_multi_cleanup(h->multi);
  if (h->extra_ca) sk_X509_pop_free(h->extra_ca, X509_free);
  for (uint32_t i = 0; h->slots && i < h->o.max_inflight; i++) {
    xfer_t *x = &h->slots[i];
    if (x->easy) curl_easy_cleanup(x->easy);
    drop_headers(x);
    fq_buf_free(&x->body);
    fq_buf_free(&x->resp);
  }
  fq_buf_free(&h->spare);
  free(h->slots);
  free(h->done);
  if (h->epfd >= 0) close(h->epfd);
  free(h->user_agent);
  free(h);
  *hp = NULL;
}

/* ---- requests ---------------------------------------------------------- */

static xfer_t *find(fq_http_t *h, uint64_t id) {
  uint32_t slot1 = (uint32_t)(id & 0xffffffffu);
  if (slot1 == 0 || slot1 > h->o.max_inflight) return NULL;
  xfer_t *x = &h->slots[slot1 - 1];
  return x->id == id ? x : NULL;
}

/* Options that are the same for every request of this client: set once
 * per easy handle. */
static void setup_constant(fq_http_t *h, xfer_t *x) {
  CURL *e = x->easy;
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_VERBOSE, 0L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
  if (h->extra_ca) {
    curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
    curl_easy_setopt(e, CURLOPT_SSL_CTX_DATA, h);
  }
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
  curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(e, CURLOPT_DNS_CACHE_TIMEOUT, h->o.dns_cache_s);
  curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, h->o.max_idle_conn_s);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, h->o.connect_timeout_ms);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, h->o.low_speed_limit);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, h->o.low_speed_time_s);
  curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)h->o.max_body);
  curl_easy_setopt(e, CURLOPT_USERAGENT, h->user_agent);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
  curl_easy_setopt(e, CURLOPT_PRIVATE, x);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
  curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, on_prereq);
  curl_easy_setopt(e, CURLOPT_PREREQDATA, x);
  x->configured = true;
}

/* The slot's header list for this request: kept when the method, content
 * type and token are those of the slot's previous request. */
static int setup_headers(xfer_t *x, const fq_http_req_t *req, fq_err_t *err) {
  /* On GETs too (http.h): left empty, the header line "Content-Type: "
   * would make curl drop the header altogether. */
  char ctype[64];
  const char *ct = req->content_type ? req->content_type : "application/json";
  if (strlen(ct) >= sizeof ctype - 16 || strpbrk(ct, "\r\n"))
    return fq_errf(err, FQ_EBADPARAM, "content type too long or not one line");
  snprintf(ctype, sizeof ctype, "%s", ct);
  size_t tl = 0;
  if (req->bearer) {
    tl = strnlen(req->bearer, TOKEN_MAX + 1);
    if (tl > TOKEN_MAX)
      return fq_errf(err, FQ_ETOOLARGE, "access token longer than %d bytes", TOKEN_MAX);
    if (strpbrk(req->bearer, "\r\n"))
      return fq_errf(err, FQ_EBADPARAM, "access token contains a line break");
  }
  if (x->hdrs && x->hdr_method == req->method && strcmp(x->hdr_ctype, ctype) == 0 &&
      (req->bearer ? x->hdr_bearer && strcmp(x->hdr_bearer, req->bearer) == 0 : !x->hdr_bearer))
    return 0;
  drop_headers(x);
  struct curl_slist *l;
  char hdr[96];
#define ADD_HDR(str)                       \
  do {                                     \
    l = curl_slist_append(x->hdrs, (str)); \
    if (!l) goto nomem;                    \
    x->hdrs = l;                           \
  } while (0)
  ADD_HDR("Accept: application/json");
  ADD_HDR("Expect:"); /* no 100-continue round trip */
  /* On GETs too: Tesla's Fleet API requires it on every request. */
  snprintf(hdr, sizeof hdr, "Content-Type: %s", ctype);
  ADD_HDR(hdr);
  if (req->bearer) {
    char *auth = malloc(tl + 32);
    if (!auth) goto nomem;
    memcpy(auth, "Authorization: Bearer ", 22);
    memcpy(auth + 22, req->bearer, tl + 1);
    l = curl_slist_append(x->hdrs, auth);
    OPENSSL_cleanse(auth, tl + 22);
    free(auth);
    if (!l) goto nomem;
    x->hdrs = l;
    x->hdr_bearer = strdup(req->bearer);
    if (!x->hdr_bearer) goto nomem;
  }
#undef ADD_HDR
  x->hdr_method = req->method;
  memcpy(x->hdr_ctype, ctype, sizeof ctype);
  return 0;
nomem:
  drop_headers(x);
  return fq_errf(err, -ENOMEM, "out of memory");
}

static int setup_easy(fq_http_t *h, xfer_t *x, const fq_http_req_t *req, fq_err_t *err) {
  CURL *e = x->easy;
  int rc;
  if (!x->configured) setup_constant(h, x);
  if ((rc = setup_headers(x, req, err)) != 0) return rc;
  curl_easy_setopt(e, CURLOPT_URL, req->url);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, req->timeout_ms > 0 ? req->timeout_ms : h->o.total_timeout_ms);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
  if (req->method == FQ_HTTP_POST) {
    /* From memory: curl sends small bodies in the same write as the
     * headers. */
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body.len);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body.len ? (char *)x->body.data : "");
  } else {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  }
  return 0;
}

int fq_http_request(fq_http_t *h, const fq_http_req_t *req, fq_http_cb cb, void *ud,
                    uint64_t *id, fq_err_t *err) {
  int rc = 0;
  xfer_t *x = NULL;
  if (!req || !req->url || !cb)
    return fq_errf(err, FQ_EBADPARAM, "request needs a URL and a callback");
  if (strncmp(req->url, "https://", 8) != 0 && strncmp(req->url, "http://", 7) != 0)
    return fq_errf(err, FQ_EBADPARAM, "URL must start with https:// or http://");
  if (strlen(req->url) > 4096) return fq_errf(err, FQ_EBADPARAM, "URL longer than 4096 bytes");
  if (h->free_head == 0)
    return fq_errf(err, FQ_EBUSY, "%u HTTP requests already in flight", h->o.max_inflight);

  x = &h->slots[h->free_head - 1];
  h->free_head = x->next_free;
  h->inflight++;
  x->gen++;
  x->id = ((uint64_t)x->gen << 32) | (uint64_t)(x - h->slots + 1);
  x->cb = cb;
  x->ud = ud;
  x->sent = false;
  x->truncated = false;
  x->errbuf[0] = 0; /* curl only writes it on a failure */
  x->resp.cap = h->o.max_body + 1;
  x->body.cap = 0; /* the default cap of a buffer */
  if (req->method == FQ_HTTP_POST && req->body_len &&
      (rc = fq_buf_append(&x->body, req->body, req->body_len)) != 0) {
    rc = fq_errf(err, rc, rc == -ENOMEM ? "out of memory" : "request body too large");
    goto out;
  }
  if (!x->easy) x->easy = curl_easy_init();
  if (!x->easy) {
    rc = fq_errf(err, -ENOMEM, "curl_easy_init failed");
    goto out;
  }
  if ((rc = setup_easy(h, x, req, err)) != 0) goto out;
  x->start_ns = fq_mono_ns();
  CURLMcode mc = curl_multi_add_handle(h->multi, x->easy);
  if (mc != CURLM_OK) {
    rc = fq_errf(err, FQ_EHTTP, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
    goto out;
  }
  *id = x->id;
out:
  if (rc != 0) xfer_release(h, x);
  return rc;
}

int fq_http_post_json(fq_http_t *h, const char *url, const char *bearer, const void *body,
                      size_t len, fq_http_cb cb, void *ud, uint64_t *id, fq_err_t *err) {
  fq_http_req_t r = {.method = FQ_HTTP_POST, .url = url, .bearer = bearer,
                     .content_type = "application/json", .body = body, .body_len = len};
  return fq_http_request(h, &r, cb, ud, id, err);
}

int fq_http_get(fq_http_t *h, const char *url, const char *bearer, fq_http_cb cb, void *ud,
                uint64_t *id, fq_err_t *err) {
  fq_http_req_t r = {.method = FQ_HTTP_GET, .url = url, .bearer = bearer};
  return fq_http_request(h, &r, cb, ud, id, err);
}

int fq_http_cancel(fq_http_t *h, uint64_t id) {
  xfer_t *x = find(h, id);
  if (!x) return FQ_ENOTFOUND;
  xfer_release(h, x);
  return 0;
}

unsigned fq_http_inflight(const fq_http_t *h) { return h->inflight; }

/* ---- poll integration -------------------------------------------------- */

int fq_http_nfds(const fq_http_t *h) {
  (void)h;
  return 1;
}

int fq_http_nsockets(const fq_http_t *h) { return h->nsocks; }

int fq_http_fds(const fq_http_t *h, zmq_pollitem_t *items, int max) {
  if (max >= 1) {
    items[0].socket = NULL;
    items[0].fd = h->epfd;
    items[0].events = ZMQ_POLLIN;
    items[0].revents = 0;
  }
  return 1;
}

long fq_http_timeout_ms(const fq_http_t *h) {
  if (h->timer_deadline_ns < 0) return -1;
  int64_t left = h->timer_deadline_ns - fq_mono_ns();
  if (left <= 0) return 0;
  return (long)((left + 999999) / 1000000);
}

static void copy_header(CURL *e, const char *name, char *out) {
  struct curl_header *hh = NULL;
  out[0] = 0;
  if (curl_easy_header(e, name, 0, CURLH_HEADER, -1, &hh) == CURLHE_OK && hh && hh->value)
    snprintf(out, FQ_HTTP_HDR_MAX, "%s", hh->value);
}

static void finish(fq_http_t *h, xfer_t *x, CURLcode code) {
  fq_http_resp_t resp;
  fq_http_resp_t *r = &resp;
  static const uint8_t empty[1] = {0};
  fq_http_cb cb = x->cb;
  void *ud = x->ud;
  long status = 0;
  /* Only the small fields: the header strings are set below. */
  memset(r, 0, offsetof(fq_http_resp_t, retry_after));
  r->retry_after[0] = r->alt_svc[0] = r->ratelimit_reset[0] = r->location[0] = 0;
  r->ratelimit_limit[0] = r->ratelimit_remaining[0] = 0;
  fq_err_clear(&r->err);
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
  long ver = 0;
  curl_easy_getinfo(x->easy, CURLINFO_HTTP_VERSION, &ver);
  r->http_version = ver == CURL_HTTP_VERSION_1_0   ? 10
                    : ver == CURL_HTTP_VERSION_1_1 ? 11
                    : ver == CURL_HTTP_VERSION_2_0 ? 20
                    : ver == CURL_HTTP_VERSION_3   ? 30
                                                   : 0;
  r->id = x->id;
  r->status = status;
  r->curl_code = (int)code;
  r->elapsed_us = (fq_mono_ns() - x->start_ns) / 1000;
  if (code == CURLE_OK) {
    r->outcome = FQ_HTTP_COMPLETE;
  } else if (x->truncated || code == CURLE_FILESIZE_EXCEEDED) {
    r->outcome = FQ_HTTP_TRUNCATED;
    fq_errf(&r->err, FQ_ETOOLARGE, "response body larger than %zu bytes (truncated)",
            h->o.max_body);
  } else {
    bool sent = x->sent;
    r->outcome = sent ? FQ_HTTP_UNKNOWN : FQ_HTTP_NOT_SENT;
    x->errbuf[sizeof x->errbuf - 1] = 0;
    fq_errf(&r->err, FQ_EHTTP, "%.200s%s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(code),
            sent ? " (after the request was sent)" : " (request not sent)");
    if (code == CURLE_PEER_FAILED_VERIFICATION) {
      /* OpenSSL verifies the chain during the handshake and records why it
       * refused it; curl checks the host name itself afterwards, on a
       * chain OpenSSL trusted (the verify result then reads "OK", or "not
       * determined yet" in curl 7.88), and says so in its message ("no
       * alternative certificate subject name matches target host name").
       * A certificate for other names is not a trust problem, however the
       * chain came to be trusted (the system store or --ca-file). */
      long vr = -1;
      curl_easy_getinfo(x->easy, CURLINFO_SSL_VERIFYRESULT, &vr);
      bool name = vr == X509_V_ERR_HOSTNAME_MISMATCH || vr == X509_V_ERR_IP_ADDRESS_MISMATCH ||
                  ((vr == X509_V_OK || vr == X509_V_ERR_UNSPECIFIED) &&
                   strstr(x->errbuf, "target host name") != NULL);
      r->tls = name ? FQ_HTTP_TLS_NAME_MISMATCH : FQ_HTTP_TLS_UNTRUSTED;
    }
  }
  if (status && (status < 200 || status > 299)) { /* only errors and redirects use them */
    copy_header(x->easy, "Retry-After", r->retry_after);
    copy_header(x->easy, "Alt-Svc", r->alt_svc);
    copy_header(x->easy, "Location", r->location);
  }
  if (status) { /* the account's budget comes with every answer */
    copy_header(x->easy, "RateLimit-Reset", r->ratelimit_reset);
    copy_header(x->easy, "RateLimit-Limit", r->ratelimit_limit);
    copy_header(x->easy, "RateLimit-Remaining", r->ratelimit_remaining);
  }
  /* Terminate the body for string-minded parsers; room is reserved by the
   * buffer cap being max_body + 1. */
  if (x->resp.len && fq_buf_append(&x->resp, "", 1) == 0) x->resp.len--;
  r->body = x->resp.len ? x->resp.data : empty;
  r->body_len = x->resp.len;
  /* Release the slot first so the callback can reuse it at once, but keep
   * the body alive until the callback returns: the slot gets the spare
   * buffer, and the body becomes the spare afterwards. */
  fq_buf_t body = x->resp;
  x->resp = h->spare;
  memset(&h->spare, 0, sizeof h->spare);
  xfer_release(h, x);
  cb(ud, r);
  if (body.len) OPENSSL_cleanse(body.data, body.len);
  body.len = 0;
  if (h->spare.data) fq_buf_free(&h->spare); /* a callback finished another (not expected) */
  h->spare = body;
}

int fq_http_perform(fq_http_t *h, const zmq_pollitem_t *items, int n, fq_err_t *err) {
  int running = 0, done = 0;
  CURLMcode mc;
  /* The items only say whether the epoll set was ready; asking it directly
   * (without waiting) costs one system call and also catches readiness
   * that arrived after the poll. */
  (void)items;
  (void)n;
  struct epoll_event evs[128];
  for (int round = 0; round < 16; round++) {
    int k = epoll_wait(h->epfd, evs, 128, 0);
    if (k < 0) {
      if (errno == EINTR) continue;
      return fq_errf(err, -errno, "epoll_wait: %s", fq_strerror(-errno));
    }
    for (int i = 0; i < k; i++) {
      int ev = 0;
      if (evs[i].events & EPOLLIN) ev |= CURL_CSELECT_IN;
      if (evs[i].events & EPOLLOUT) ev |= CURL_CSELECT_OUT;
      if (evs[i].events & (EPOLLERR | EPOLLHUP)) ev |= CURL_CSELECT_ERR;
      mc = curl_multi_socket_action(h->multi, evs[i].data.fd, ev, &running);
      if (mc != CURLM_OK) return fq_errf(err, FQ_EHTTP, "curl: %s", curl_multi_strerror(mc));
    }
    if (k < 128) break;
  }
  if (h->timer_deadline_ns >= 0 && fq_mono_ns() >= h->timer_deadline_ns) {
    h->timer_deadline_ns = -1;
    mc = curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    if (mc != CURLM_OK) return fq_errf(err, FQ_EHTTP, "curl: %s", curl_multi_strerror(mc));
  }
  /* Read every message before finishing any transfer: removing a handle
   * makes curl (7.88) walk the messages still unread for one of that
   * handle, so finishing each as it is read costs k^2/2 steps for k
   * transfers done at once (hundreds for a busy shard).  A callback may
   * cancel a transfer read here, or start a new one in its slot: the id
   * read with the message tells. */
  CURLMsg *m;
  int left;
  size_t nd = 0;
  /* At most one message per slot in use (curl reports a transfer done
   * once), so done has room for all; the bound is a safety net only
   * (what it left would be read by the next perform). */
  while (nd < h->o.max_inflight && (m = curl_multi_info_read(h->multi, &left)) != NULL) {
    if (m->msg != CURLMSG_DONE) continue;
    xfer_t *x = NULL;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
    if (!x || !x->id) continue;
    h->done[nd].x = x;
    h->done[nd].id = x->id;
    h->done[nd++].code = m->data.result;
  }
  for (size_t i = 0; i < nd; i++) {
    xfer_t *x = h->done[i].x;
    if (x->id != h->done[i].id) continue; /* cancelled by an earlier callback */
    finish(h, x, h->done[i].code);
    done++;
  }
  return done;
}

int fq_http_run_once(fq_http_t *h, long max_wait_ms, fq_err_t *err) {
  zmq_pollitem_t item;
  fq_http_fds(h, &item, 1);
  long t = fq_http_timeout_ms(h);
  if (t < 0 || t > max_wait_ms) t = max_wait_ms;
  if (zmq_poll(&item, 1, t) < 0 && errno != EINTR)
    return fq_errf(err, -errno, "zmq_poll: %s", zmq_strerror(errno));
  return fq_http_perform(h, &item, 1, err);
}
