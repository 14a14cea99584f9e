/*
 * fleetqd: the daemon.  Parses the configuration, claims the data
 * directory, creates every part (account store, auth side, one shard per
 * core with its store and dispatcher, the ingress) in this thread so that
 * any start-up failure ends here with a message, starts the threads and
 * runs the ingress loop in the main thread until SIGTERM / SIGINT, then
 * drains (requests in flight get --drain-timeout-ms to be answered) and
 * exits 0.  SIGHUP reopens the log file, reloads the log level and the
 * clients file, and never ends it.  Under
 * systemd (packaging/fleetqd.service, Type=notify) it also says READY=1,
 * STOPPING=1 and WATCHDOG=1 (sdnotify.h).
 *
 * Exit status: 0 after a clean stop (or --help); 2 for a configuration
 * the daemon refuses (flags, config file, CURVE key or clients file, a
 * non-loopback bind without CURVE, another
 * shard count than the data directory's); 1 for any other start-up or
 * run failure; 70 (fq_fatal) when a thread met a state it cannot go on
 * from, such as a disk that stopped taking commits.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "accounts.h"
#include "auth.h"
#include "clients.h"
#include "clnode.h"
#include "budget.h"
#include "config.h"
#include "curvekey.h"
#include "demo.h"
#include "dispatch.h"
#include "ingress.h"
#include "log.h"
#include "metrics.h"
#include "sdnotify.h"
#include "shard.h"
#include "store.h"
#include "util.h"
#include "vcp.h"

static int stop_pipe[2] = {-1, -1};
static int reload_pipe[2] = {-1, -1};

static void on_signal(int sig) {
  (void)sig;
  char c = 1;
  ssize_t w = write(stop_pipe[1], &c, 1);
  (void)w;
  fq_sdnotify_stopping(); /* async-signal-safe: a write to the notifier's pipe */
}

/* The command line, for the reload on SIGHUP. */
static int g_argc;
static char **g_argv;

/* SIGHUP's log part: reopen the log file (logrotate renamed it), and read
 * the configuration again the way start-up did (defaults, --config file,
 * flags), of which the log level and the budgets take effect: a flag still
 * wins over the file, so a level given with --log-level stays.  A file
 * that no longer parses leaves everything as it was. */
static void reload_log(void) {
  fq_err_t err;
  fq_err_clear(&err);
  if (fq_log_reopen(&err) != 0)
    fq_error("fleetqd", "log file not reopened, still writing to the old one: %s", err.msg);
  fq_config_t *cfg = malloc(sizeof *cfg);
  if (!cfg) {
    fq_error("fleetqd", "log level not reloaded: out of memory");
    return;
  }
  fq_config_defaults(cfg);
  fq_err_clear(&err);
  int rc = fq_config_from_args(cfg, g_argc, g_argv, &err);
  if (rc != 0) {
    fq_error("fleetqd", "configuration not reloaded, the log level and budgets stay: %s",
             err.msg);
    free(cfg);
    return;
  }
  /* The config's budgets (the clients file's are reloaded by the ingress). */
  fq_budget_set_limits(FQ_BUDGET_CONFIG, cfg->budgets, cfg->nbudgets);
  fq_info("fleetqd", "budgets from the configuration: %zu tenant(s)", cfg->nbudgets);
  if (cfg->log_level != fq_log_get_level()) {
    int old = fq_log_get_level();
    /* Said at both levels' threshold: whichever is lower shows it. */
    fq_log_set_level(cfg->log_level < old ? cfg->log_level : old);
    fq_info("fleetqd", "log level %s -> %s", fq_log_level_name(old),
            fq_log_level_name(cfg->log_level));
    fq_log_set_level(cfg->log_level);
  }
  free(cfg);
}

/* SIGHUP (a terminal hang-up, or an operator asking for a reload) must
 * never end the daemon.  It is taken by this thread with sigwait() (every
 * thread blocks it, see install_signals), logged, which a signal handler
 * could not do safely; this thread reopens the log file and reloads the
 * log level (reload_log), and passes the signal on to the ingress thread,
 * which reloads the clients file (with CURVE). */
static void *hup_main(void *arg) {
  sigset_t *set = arg;
  for (;;) {
    int sig;
    if (sigwait(set, &sig) != 0 || sig != SIGHUP) continue;
    reload_log();
    fq_info("fleetqd", "SIGHUP received: log reopened, reloading what can be reloaded; "
                       "fleetqd keeps running");
    char c = 1;
    if (reload_pipe[1] >= 0 && write(reload_pipe[1], &c, 1) < 0) {
      /* Full pipe: a reload is pending already. */
    }
  }
  return NULL;
}

/* Everything main() creates, released by daemon_close() in reverse. */
typedef struct daemon {
  fq_config_t cfg;
  fq_demo_t *demo;
  fq_store_datadir_t *datadir;
  void *ctx;
  fq_vcp_key_t *key;
  fq_accounts_t *accounts;
  fq_auth_t *auth;
  fq_shared_rl_t account_rl;
  bool account_rl_mu;          /* account_rl.mu initialised */
  char extra_host[300];
  fq_dispatch_opts_t dopts;    /* lent to every shard: lives as long as they do */
  fq_shard_t **shards;         /* cfg.shards entries */
  fq_ingress_t *in;
  char curve_secret[41];       /* CURVE server secret key (Z85), "" = plaintext */
  fq_clients_t *clients;       /* handed to the ingress */
  fq_sdnotify_t *notify;       /* systemd: READY / STOPPING / WATCHDOG */
  fq_metrics_t *metrics;       /* GET /metrics (--metrics), or NULL */
  _Atomic uint64_t heartbeat;  /* the ingress loop's turns, for the watchdog */
  fq_clnode_t *cluster;       /* --cluster: this node (docs/cluster.md) */
} daemon_t;

/* CURVE: the server key and the clients file, or, without them, loopback
 * and ipc:// endpoints only.  Returns 0 or -1 (message printed). */
static int load_security(daemon_t *d) {
  fq_config_t *cfg = &d->cfg;
  fq_err_t err;
  fq_err_clear(&err);
  if (!cfg->curve_secret[0]) {
    if (cfg->clients[0]) {
      fprintf(stderr, "fleetqd: --clients needs --curve-secret: client keys are checked only "
                      "when the sockets use CURVE\n");
      return -1;
    }
    if (!fq_endpoint_is_local(cfg->listen) || !fq_endpoint_is_local(cfg->publish)) {
      fprintf(stderr,
              "fleetqd: refusing to bind a non-loopback address (%s, %s) without client "
              "authentication: give --curve-secret and --clients (docs/security.md)\n",
              cfg->listen, cfg->publish);
      return -1;
    }
    fq_warn("fleetqd", "no --curve-secret: any local user can send commands to %s and read "
                       "every tenant's events on %s (docs/security.md)",
            cfg->listen, cfg->publish);
    return 0;
  }
  if (!cfg->clients[0]) {
    fprintf(stderr, "fleetqd: --curve-secret needs --clients FILE: the client keys allowed in, "
                    "with their tenants and roles (docs/security.md)\n");
    return -1;
  }
  char pub[41];
  if (fq_curve_keyfile_load(cfg->curve_secret, pub, d->curve_secret, &err) != 0) {
    fprintf(stderr, "fleetqd: --curve-secret: %s\n", err.msg);
    return -1;
  }
  if (!(d->clients = fq_clients_load(cfg->clients, &err))) {
    fprintf(stderr, "fleetqd: --clients: %s\n", err.msg);
    return -1;
  }
  size_t nb;
  const fq_budget_limit_t *b = fq_clients_budgets(d->clients, &nb);
  fq_budget_set_limits(FQ_BUDGET_CLIENTS, b, nb);
  fq_info("fleetqd", "CURVE on: server public key %s, %zu client key(s) from %s", pub,
          fq_clients_count(d->clients), cfg->clients);
  return 0;
}

/* Parse flags and config file.  Returns -1 to go on, else the exit status. */
static int read_config(daemon_t *d, int argc, char **argv) {
  fq_err_t err;
  fq_err_clear(&err);
  fq_config_defaults(&d->cfg);
  int rc = fq_config_from_args(&d->cfg, argc, argv, &err);
  if (rc == 1) return 0;
  if (rc) {
    fprintf(stderr, "fleetqd: %s\n", err.msg);
    return 2;
  }
  fq_log_set_level(d->cfg.log_level);
  fq_log_set_format(d->cfg.log_format);
  if (d->cfg.log_file[0] && fq_log_open(d->cfg.log_file, &err) != 0) {
    fprintf(stderr, "fleetqd: %s\n", err.msg);
    return 2;
  }
  if (d->cfg.demo && fq_demo_prepare(&d->cfg, &d->demo, &err) != 0) {
    fprintf(stderr, "fleetqd --demo: %s\n", err.msg);
    return 1;
  }
  if (!d->cfg.shards) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    d->cfg.shards = n > 0 ? (unsigned)n : 1;
  }
  /* A bind needs an address: tcp://localhost:P binds 127.0.0.1:P. */
  if (fq_endpoint_bindable(d->cfg.listen, sizeof d->cfg.listen))
    fq_info("fleetqd", "--listen: binding localhost as 127.0.0.1 (%s)", d->cfg.listen);
  if (fq_endpoint_bindable(d->cfg.publish, sizeof d->cfg.publish))
    fq_info("fleetqd", "--publish: binding localhost as 127.0.0.1 (%s)", d->cfg.publish);
  if (load_security(d) != 0) return 2;
  snprintf(d->extra_host, sizeof d->extra_host, "%s", d->cfg.allow_host);
  return -1;
}

/* One daemon per data directory, with the shard count it was created
 * with (see store.h).  Returns -1 to go on, else the exit status. */
static int claim_datadir(daemon_t *d) {
  fq_err_t err;
  fq_err_clear(&err);
  int rc = fq_store_open_datadir(d->cfg.data_dir, d->cfg.shards, &d->datadir, &err);
  /* The budget counts live beside the shards: loaded once the directory
   * is ours. */
  if (rc == 0 && (rc = fq_budget_init(d->cfg.budgets, d->cfg.nbudgets, d->cfg.data_dir,
                                      &err)) == 0)
    return -1;
  fprintf(stderr, "fleetqd: %s\n", err.msg);
  return rc == FQ_ECONFIG ? 2 : 1;
}

/* SIGTERM / SIGINT write to the stop pipe the ingress polls.  SIGHUP is
 * blocked here, before any thread exists, so that every thread inherits
 * the mask and only hup_main() receives it. */
static int install_signals(daemon_t *d) {
  fq_err_t err;
  fq_err_clear(&err);
  /* Before the SIGTERM handler, which tells the notifier a stop began. */
  if (!(d->notify = fq_sdnotify_new(&d->heartbeat, &err))) {
    fprintf(stderr, "fleetqd: %s\n", err.msg);
    return -1;
  }
  static sigset_t hup;
  sigemptyset(&hup);
  sigaddset(&hup, SIGHUP);
  pthread_t th;
  int rc = pthread_sigmask(SIG_BLOCK, &hup, NULL);
  if (rc == 0) rc = pthread_create(&th, NULL, hup_main, &hup);
  if (rc == 0) rc = pthread_detach(th);
  if (rc) {
    fprintf(stderr, "fleetqd: cannot set up SIGHUP handling: %s\n", fq_strerror(-rc));
    return -1;
  }
  if (pipe(reload_pipe) != 0 || fcntl(reload_pipe[0], F_SETFL, O_NONBLOCK) != 0 ||
      fcntl(reload_pipe[1], F_SETFL, O_NONBLOCK) != 0) {
    fprintf(stderr, "fleetqd: cannot create the reload pipe: %s\n", fq_strerror(-errno));
    return -1;
  }
  if (pipe(stop_pipe) != 0) {
    fprintf(stderr, "fleetqd: cannot create the stop pipe: %s\n", fq_strerror(-errno));
    return -1;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0 ||
      signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
    fprintf(stderr, "fleetqd: cannot install signal handlers: %s\n", fq_strerror(-errno));
    return -1;
  }
  return 0;
}

/* The ZeroMQ context, the fleet key, the account store, the auth side and
 * the per-account rate limits the shards share. */
static int open_shared(daemon_t *d) {
  fq_config_t *cfg = &d->cfg;
  fq_err_t err;
  fq_err_clear(&err);
  if (!(d->ctx = zmq_ctx_new())) {
    fprintf(stderr, "fleetqd: cannot create the ZeroMQ context: %s\n", zmq_strerror(errno));
    return -1;
  }
  if (zmq_ctx_set(d->ctx, ZMQ_IO_THREADS, 1) != 0) {
    fprintf(stderr, "fleetqd: cannot configure the ZeroMQ context: %s\n",
            zmq_strerror(errno));
    return -1;
  }
  if (cfg->key_file[0] && fq_vcp_key_load(cfg->key_file, &d->key, &err) != 0) {
    fprintf(stderr, "fleetqd: --key: %s\n", err.msg);
    return -1;
  }
  if (!(d->accounts = fq_accounts_open(cfg->data_dir, &err))) {
    fprintf(stderr, "fleetqd: account store: %s\n", err.msg);
    return -1;
  }
  fq_auth_opts_t ao = {.zmq_ctx = d->ctx,
                       .accounts = d->accounts,
                       .ca_file = cfg->ca_file[0] ? cfg->ca_file : NULL,
                       .token_url = cfg->token_url[0] ? cfg->token_url : NULL,
                       .extra_host = d->extra_host[0] ? d->extra_host : NULL};
  if (!(d->auth = fq_auth_new(&ao, &err))) {
    fprintf(stderr, "fleetqd: %s\n", err.msg);
    return -1;
  }
  if (cfg->account_rate > 0) {
    fq_rl_opts_t ro = {.rate = cfg->account_rate,
                       .burst = cfg->account_burst >= 1 ? cfg->account_burst : 1,
                       .capacity = 65536};
    if (!(d->account_rl.rl = fq_rl_new(&ro, &err))) {
      fprintf(stderr, "fleetqd: --account-rate: %s\n", err.msg);
      return -1;
    }
  }
  /* Always: a 429 parks the account on every shard. */
  fq_rl_opts_t po = {.rate = 1e9, .burst = 1e9, .capacity = 65536};
  if (!(d->account_rl.park = fq_rl_new(&po, &err))) {
    fprintf(stderr, "fleetqd: account park table: %s\n", err.msg);
    return -1;
  }
  int rc = pthread_mutex_init(&d->account_rl.mu, NULL);
  if (rc) {
    fprintf(stderr, "fleetqd: cannot create the account limits' mutex: %s\n", fq_strerror(-rc));
    return -1;
  }
  d->account_rl_mu = true;
  return 0;
}

/* One shard per core: store, recovery and dispatcher, all created here. */
/* Opening one shard, on an opener thread of open_shards(). */
typedef struct shard_open {
  fq_shard_opts_t so;
  fq_shard_t *sh;
  fq_err_t err;
  pthread_t th;
  bool started;
} shard_open_t;

static void *shard_opener(void *arg) {
  shard_open_t *o = arg;
  o->sh = fq_shard_new(&o->so, &o->err);
  return NULL;
}

static int open_shards(daemon_t *d) {
  fq_config_t *cfg = &d->cfg;
  d->dopts = (fq_dispatch_opts_t){.key = d->key,
                                  .accounts = d->accounts,
                                  .zmq_ctx = d->ctx,
                                  .auth = d->auth,
                                  .auth_refresh_ep = fq_auth_refresh_endpoint(d->auth),
                                  .ca_file = cfg->ca_file[0] ? cfg->ca_file : NULL,
                                  .pairing_domain = cfg->pairing_domain,
                                  .allow_host = d->extra_host[0] ? d->extra_host : NULL,
                                  .wake_poll_ms = cfg->wake_poll_ms,
                                  .retry_backoff_ms = cfg->retry_backoff_ms,
                                  .http_timeout_ms = cfg->http_timeout_ms,
                                  .wake_timeout_ms = cfg->wake_timeout_ms,
                                  .wake_max = cfg->wake_max,
                                  .fleet_status_ttl_ms = cfg->fleet_status_ttl_s * 1000,
                                  .device_rate = cfg->device_rate,
                                  .device_burst = cfg->device_burst,
                                  .account_rl = &d->account_rl};
  if (!(d->shards = calloc(cfg->shards, sizeof *d->shards))) {
    fprintf(stderr, "fleetqd: out of memory for %u shards\n", cfg->shards);
    return -1;
  }
  /* Each shard opens its store and recovers it (re-queues, settles what
   * was in flight) before the daemon is ready.  The shards share nothing,
   * so they open side by side, one opener thread each, as they did when
   * the shard threads opened themselves: a restart with a large store
   * takes as long as its largest shard, not the sum.  Every failure is
   * reported, and returned here in this thread. */
  shard_open_t *op = calloc(cfg->shards, sizeof *op);
  if (!op) {
    fprintf(stderr, "fleetqd: out of memory for %u shards\n", cfg->shards);
    return -1;
  }
  for (unsigned i = 0; i < cfg->shards; i++) {
    op[i].so = (fq_shard_opts_t){.zmq_ctx = d->ctx,
                                 .data_dir = cfg->data_dir,
                                 .index = i,
                                 .count = cfg->shards,
                                 .map_size = cfg->map_size_mb << 20,
                                 .max_store = cfg->max_store_mb << 20,
                                 .default_ttl_ms = cfg->default_ttl_ms,
                                 .batch_max = cfg->batch_max,
                                 .dispatch = cfg->no_dispatch ? NULL : &d->dopts,
                                 .accounts = d->accounts,
                                 .auth = d->auth,
                                 .drain_timeout_ms = cfg->drain_timeout_ms,
                                 .retention_ms = cfg->retention_s * 1000,
                                 .dedupe_window_ms = cfg->dedupe_window_s * 1000,
                                 .cluster = d->cluster};
    fq_err_clear(&op[i].err);
    /* One shard (or a thread that cannot start) opens right here. */
    op[i].started = cfg->shards > 1 && pthread_create(&op[i].th, NULL, shard_opener, &op[i]) == 0;
    if (!op[i].started) shard_opener(&op[i]);
  }
  int rc = 0;
  for (unsigned i = 0; i < cfg->shards; i++) {
    if (op[i].started) pthread_join(op[i].th, NULL);
    d->shards[i] = op[i].sh;
    if (!op[i].sh) {
      fprintf(stderr, "fleetqd: shard %u: %s\n", i, op[i].err.msg);
      rc = -1;
    }
  }
  free(op);
  return rc;
}

/* --cluster: connect to JetStream, make sure the shards' logs and the
 * lease bucket exist; the lease thread starts with the other threads. */
static int open_cluster(daemon_t *d) {
  fq_config_t *cfg = &d->cfg;
  if (!cfg->cluster[0]) return 0;
  fq_err_t err;
  fq_err_clear(&err);
  fq_clnode_opts_t o = {.urls = cfg->cluster,
                        .node_id = cfg->node_id,
                        .advertise = cfg->cluster_advertise[0] ? cfg->cluster_advertise
                                                               : cfg->listen,
                        .nshards = cfg->shards,
                        .retention_ms = cfg->retention_s * 1000};
  if (!(d->cluster = fq_clnode_new(&o, &err))) {
    fprintf(stderr, "fleetqd: %s\n", err.msg);
    return -1;
  }
  for (unsigned i = 0; i < cfg->shards; i++) fq_metrics_cluster_owned(i, false);
  return 0;
}

static int open_ingress(daemon_t *d) {
  fq_config_t *cfg = &d->cfg;
  fq_err_t err;
  fq_err_clear(&err);
  fq_ingress_opts_t io = {.zmq_ctx = d->ctx,
                          .listen = cfg->listen,
                          .publish = cfg->publish,
                          .shards = d->shards,
                          .nshards = cfg->shards,
                          .max_msg_size = cfg->max_msg_size,
                          .client_hwm = cfg->client_hwm,
                          .client_reply_max = (size_t)cfg->client_reply_kb * 1024,
                          .pub_hwm = cfg->pub_hwm,
                          .shard_hwm = cfg->shard_hwm,
                          .stop_fd = stop_pipe[0],
                          .auth_endpoint = fq_auth_admin_endpoint(d->auth),
                          .auth = d->auth,
                          .curve_secret = d->curve_secret[0] ? d->curve_secret : NULL,
                          .clients = d->clients,
                          .clients_file = cfg->clients[0] ? cfg->clients : NULL,
                          .reload_fd = reload_pipe[0],
                          .ipc_mode = cfg->ipc_mode,
                          .data_dir = cfg->data_dir,
                          .accounts = d->accounts,
                          .cluster = d->cluster,
                          .retention_s = cfg->retention_s,
                          .dedupe_window_s = cfg->dedupe_window_s,
                          .heartbeat = fq_sdnotify_heartbeat_ms(d->notify) ? &d->heartbeat : NULL,
                          .heartbeat_ms = fq_sdnotify_heartbeat_ms(d->notify)};
  d->clients = NULL; /* the ingress owns it now, even when it fails */
  if (!(d->in = fq_ingress_new(&io, &err))) {
    fprintf(stderr, "fleetqd: %s\n", err.msg);
    return -1;
  }
  return 0;
}

/* --metrics: bind and start the HTTP thread (after install_signals, so
 * that it inherits the blocked SIGHUP).  A port in use ends the start. */
static int open_metrics(daemon_t *d) {
  if (!d->cfg.metrics[0]) return 0;
  fq_err_t err;
  fq_err_clear(&err);
  if (!(d->metrics = fq_metrics_start(d->cfg.metrics, d->cfg.shards, &err))) {
    fprintf(stderr, "fleetqd: %s\n", err.msg);
    return -1;
  }
  return 0;
}

/* Start the auth and shard threads.  Once one runs, a failure cannot just
 * return: the running threads wait for the ingress's stop message, which
 * only fq_ingress_run() sends, and never for the ones that did not start.
 * Shutting the context down instead makes their next ZeroMQ call fail with
 * ETERM, on which each thread leaves its loop, so daemon_close() can join
 * them.  They have stored nothing new: no client was served yet. */
static int start_threads(daemon_t *d) {
  int rc = fq_auth_start(d->auth);
  if (rc) {
    fprintf(stderr, "fleetqd: cannot start the auth thread: %s\n", fq_strerror(rc));
    return -1;
  }
  for (unsigned i = 0; i < d->cfg.shards; i++) {
    if ((rc = fq_shard_start(d->shards[i])) != 0) {
      fprintf(stderr, "fleetqd: cannot start shard %u: %s\n", i, fq_strerror(rc));
      zmq_ctx_shutdown(d->ctx);
      return -1;
    }
  }
  fq_err_t err;
  fq_err_clear(&err);
  if (d->cluster && fq_clnode_start(d->cluster, &err) != 0) {
    fprintf(stderr, "fleetqd: %s\n", err.msg);
    zmq_ctx_shutdown(d->ctx);
    return -1;
  }
  return 0;
}

/* Release everything; returns the exit status, which the demo's result
 * replaces after a clean stop (known only once its tour has ended). */
static int daemon_close(daemon_t *d, int status) {
  fq_metrics_destroy(&d->metrics);
  fq_ingress_destroy(&d->in);
  fq_clients_free(&d->clients);
  OPENSSL_cleanse(d->curve_secret, sizeof d->curve_secret);
  for (unsigned i = 0; d->shards && i < d->cfg.shards; i++) fq_shard_destroy(&d->shards[i]);
  free(d->shards);
  /* The shards stopped: their leases go back now, so that other nodes
   * take them at once rather than after the TTL. */
  fq_clnode_destroy(&d->cluster);
  fq_budget_close(); /* after the shards: no answer counts any more */
  fq_auth_destroy(&d->auth);
  fq_rl_destroy(&d->account_rl.rl);
  fq_rl_destroy(&d->account_rl.park);
  if (d->account_rl_mu) pthread_mutex_destroy(&d->account_rl.mu);
  fq_accounts_destroy(&d->accounts);
  fq_vcp_key_destroy(&d->key);
  if (d->demo && status == 0) status = fq_demo_result(d->demo);
  fq_demo_destroy(&d->demo);
  fq_sdnotify_destroy(&d->notify);
  /* Every socket is closed by now; EINTR (a signal) only needs a retry. */
  while (d->ctx && zmq_ctx_term(d->ctx) != 0 && errno == EINTR) {
  }
  fq_store_close_datadir(&d->datadir);
  return status;
}

int main(int argc, char **argv) {
  static daemon_t d; /* static: large (paths in the config), and zeroed */
  g_argc = argc;
  g_argv = argv;
  int status = read_config(&d, argc, argv);
  if (status < 0) status = claim_datadir(&d);
  if (status >= 0) return daemon_close(&d, status);
  status = 1;
  if (install_signals(&d) != 0 || open_metrics(&d) != 0 || open_shared(&d) != 0 ||
      open_cluster(&d) != 0 || open_shards(&d) != 0 || open_ingress(&d) != 0 || start_threads(&d) != 0)
    goto out;
  fq_info("fleetqd", "version %s, %u shard(s), data %s, listen %s, publish %s", FQ_VERSION,
          d.cfg.shards, d.cfg.data_dir, d.cfg.listen, d.cfg.publish);
  if (d.cfg.no_dispatch)
    fq_warn("fleetqd", "--no-dispatch: commands are stored and served but none is sent; they "
                       "stay queued until cancelled or expired");
  /* The line supervisors and scripts wait for.  JSON logs on stderr get
   * it as a JSON line too (msg "fleetqd: ready"), so that every line of
   * that stream parses once the daemon runs. */
  if (d.cfg.log_format == FQ_LOG_JSON && !d.cfg.log_file[0]) {
    fq_log_always(FQ_LOG_INFO, "fleetqd", "fleetqd: ready");
  } else {
    fprintf(stderr, "fleetqd: ready\n");
    fflush(stderr);
  }
  char sd_status[600];
  snprintf(sd_status, sizeof sd_status, "ready: %u shard(s), listen %s, publish %s", d.cfg.shards,
           d.cfg.listen, d.cfg.publish);
  fq_sdnotify_ready(d.notify, sd_status);
  if (d.demo && fq_demo_start_tour(d.demo, stop_pipe[1]) != 0) {
    fprintf(stderr, "fleetqd --demo: cannot start the tour\n");
    /* The threads run: stop them the way start_threads() does. */
    zmq_ctx_shutdown(d.ctx);
    goto out;
  }
  status = fq_ingress_run(d.in) ? 1 : 0;
  fq_info("fleetqd", "stopped");
out:
  return daemon_close(&d, status);
}
