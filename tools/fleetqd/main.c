/*
 * fleetqd: the daemon.  Parses the configuration, opens one store per
 * shard, starts the shard threads and runs the ingress loop in the main
 * thread until SIGTERM / SIGINT, then drains and exits 0.
 */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "accounts.h"
#include "auth.h"
#include "config.h"
#include "demo.h"
#include "dispatch.h"
#include "ingress.h"
#include "log.h"
#include "shard.h"
#include "util.h"
#include "vcp.h"

static int stop_pipe[2] = {-1, -1};

static void on_signal(int sig) {
  (void)sig;
  char c = 1;
  ssize_t w = write(stop_pipe[1], &c, 1);
  (void)w;
}

int main(int argc, char **argv) {
  fq_config_t cfg;
  fq_err_t err;
  fq_err_clear(&err);
  fq_config_defaults(&cfg);
  int rc = fq_config_from_args(&cfg, argc, argv, &err);
  if (rc == 1) return 0;
  if (rc) {
    fprintf(stderr, "fleetqd: %s\n", err.msg);
    return 2;
  }
  fq_log_set_level(cfg.log_level);
  fq_demo_t *demo = NULL;
  if (cfg.demo) {
    if (fq_demo_prepare(&cfg, &demo, &err) != 0) {
      fprintf(stderr, "fleetqd --demo: %s\n", err.msg);
      return 1;
    }
  }
  if (!cfg.shards) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cfg.shards = n > 0 ? (unsigned)n : 1;
  }
  if (!fq_endpoint_is_local(cfg.listen) || !fq_endpoint_is_local(cfg.publish)) {
    fprintf(stderr,
            "fleetqd: refusing to bind a non-loopback address (%s, %s): client authentication "
            "(ZeroMQ CURVE) is not available in this version, and fleetqd never serves "
            "unauthenticated clients beyond this host\n",
            cfg.listen, cfg.publish);
    return 2;
  }
  if (mkdir(cfg.data_dir, 0700) != 0 && errno != EEXIST) {
    fprintf(stderr, "fleetqd: cannot create data directory %s: %s\n", cfg.data_dir,
            strerror(errno));
    return 1;
  }
  /* One daemon per data directory: LMDB alone would let two processes
   * interleave their writes to the same queues. */
  char lockpath[1100];
  snprintf(lockpath, sizeof lockpath, "%s/LOCK", cfg.data_dir);
  int lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lockfd < 0 || flock(lockfd, LOCK_EX | LOCK_NB) != 0) {
    fprintf(stderr, "fleetqd: data directory %s is in use by another fleetqd (%s)\n",
            cfg.data_dir, strerror(errno));
    return 1;
  }

  /* The shard count is part of the data: a device's commands live in the
   * shard its id hashes to, so reopening with another count would split
   * queues and dedupe.  Remember it and refuse a change. */
  char countpath[1100];
  snprintf(countpath, sizeof countpath, "%s/SHARDS", cfg.data_dir);
  FILE *cf = fopen(countpath, "r");
  if (cf) {
    unsigned stored = 0;
    int got = fscanf(cf, "%u", &stored);
    fclose(cf);
    if (got == 1 && stored != cfg.shards) {
      fprintf(stderr,
              "fleetqd: data directory %s was created with %u shard(s); the shard count "
              "cannot change for a data directory (start with --shards %u)\n",
              cfg.data_dir, stored, stored);
      return 2;
    }
  } else {
    cf = fopen(countpath, "w");
    if (!cf || fprintf(cf, "%u\n", cfg.shards) < 0 || fclose(cf) != 0) {
      fprintf(stderr, "fleetqd: cannot write %s: %s\n", countpath, strerror(errno));
      return 1;
    }
  }

  if (pipe(stop_pipe) != 0) return 1;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  void *ctx = zmq_ctx_new();
  zmq_ctx_set(ctx, ZMQ_IO_THREADS, 1);
  fq_shard_t **shards = calloc(cfg.shards, sizeof *shards);
  fq_ingress_t *in = NULL;
  fq_vcp_key_t *key = NULL;
  fq_accounts_t *accounts = NULL;
  fq_auth_t *auth = NULL;
  fq_shared_rl_t account_rl = {.rl = NULL};
  int status = 1;
  if (cfg.key_file[0] && fq_vcp_key_load(cfg.key_file, &key, &err) != 0) {
    fprintf(stderr, "fleetqd: --key: %s\n", err.msg);
    goto out;
  }
  accounts = fq_accounts_open(cfg.data_dir, &err);
  if (!accounts) {
    fprintf(stderr, "fleetqd: account store: %s\n", err.msg);
    goto out;
  }
  char extra_host[300] = "";
  snprintf(extra_host, sizeof extra_host, "%s", cfg.allow_host);
  fq_auth_opts_t ao = {.zmq_ctx = ctx,
                       .accounts = accounts,
                       .ca_file = cfg.ca_file[0] ? cfg.ca_file : NULL,
                       .token_url = cfg.token_url[0] ? cfg.token_url : NULL,
                       .extra_host = extra_host[0] ? extra_host : NULL};
  auth = fq_auth_new(&ao, &err);
  if (!auth) {
    fprintf(stderr, "fleetqd: %s\n", err.msg);
    goto out;
  }
  fq_dispatch_opts_t dopts = {.key = key,
                              .accounts = accounts,
                              .zmq_ctx = ctx,
                              .auth_refresh_ep = fq_auth_refresh_endpoint(auth),
                              .ca_file = cfg.ca_file[0] ? cfg.ca_file : NULL,
                              .pairing_domain = cfg.pairing_domain,
                              .allow_host = extra_host[0] ? extra_host : NULL,
                              .wake_poll_ms = cfg.wake_poll_ms,
                              .retry_backoff_ms = cfg.retry_backoff_ms,
                              .http_timeout_ms = cfg.http_timeout_ms,
                              .wake_timeout_ms = cfg.wake_timeout_ms,
                              .device_rate = cfg.device_rate,
                              .device_burst = cfg.device_burst,
                              .account_rl = NULL};
  if (cfg.account_rate > 0) {
    fq_rl_opts_t ro = {.rate = cfg.account_rate,
                       .burst = cfg.account_burst >= 1 ? cfg.account_burst : 1,
                       .capacity = 65536};
    account_rl.rl = fq_rl_new(&ro, &err);
    if (!account_rl.rl) {
      fprintf(stderr, "fleetqd: --account-rate: %s\n", err.msg);
      goto out;
    }
    pthread_mutex_init(&account_rl.mu, NULL);
    dopts.account_rl = &account_rl;
  }
  for (unsigned i = 0; i < cfg.shards; i++) {
    fq_shard_opts_t so = {.zmq_ctx = ctx,
                          .data_dir = cfg.data_dir,
                          .index = i,
                          .count = cfg.shards,
                          .map_size = cfg.map_size_mb << 20,
                          .default_ttl_ms = cfg.default_ttl_ms,
                          .batch_max = cfg.batch_max,
                          .dispatch = &dopts};
    shards[i] = fq_shard_new(&so, &err);
    if (!shards[i]) {
      fprintf(stderr, "fleetqd: shard %u: %s\n", i, err.msg);
      goto out;
    }
  }
  fq_ingress_opts_t io = {.zmq_ctx = ctx,
                          .listen = cfg.listen,
                          .publish = cfg.publish,
                          .shards = shards,
                          .nshards = cfg.shards,
                          .max_msg_size = cfg.max_msg_size,
                          .client_hwm = cfg.client_hwm,
                          .pub_hwm = cfg.pub_hwm,
                          .shard_hwm = cfg.shard_hwm,
                          .stop_fd = stop_pipe[0],
                          .auth_endpoint = fq_auth_admin_endpoint(auth)};
  in = fq_ingress_new(&io, &err);
  if (!in) {
    fprintf(stderr, "fleetqd: %s\n", err.msg);
    goto out;
  }
  if ((rc = fq_auth_start(auth)) != 0) {
    fprintf(stderr, "fleetqd: cannot start the auth thread: %s\n", strerror(-rc));
    _exit(1);
  }
  for (unsigned i = 0; i < cfg.shards; i++) {
    if ((rc = fq_shard_start(shards[i])) != 0) {
      fprintf(stderr, "fleetqd: cannot start shard %u: %s\n", i, strerror(-rc));
      _exit(1);
    }
  }
  fq_info("fleetqd", "version %s, %u shard(s), data %s, listen %s, publish %s", FQ_VERSION,
          cfg.shards, cfg.data_dir, cfg.listen, cfg.publish);
  fprintf(stderr, "fleetqd: ready\n");
  fflush(stderr);
  if (demo && fq_demo_start_tour(demo, stop_pipe[1]) != 0) {
    fprintf(stderr, "fleetqd --demo: cannot start the tour\n");
    _exit(1);
  }
  rc = fq_ingress_run(in);
  status = rc ? 1 : 0;
  fq_info("fleetqd", "stopped");

out:
  fq_ingress_destroy(&in);
  for (unsigned i = 0; i < cfg.shards; i++) fq_shard_destroy(&shards[i]);
  free(shards);
  fq_auth_destroy(&auth);
  fq_rl_destroy(&account_rl.rl);
  fq_accounts_destroy(&accounts);
  fq_vcp_key_destroy(&key);
  if (demo) {
    if (status == 0) status = fq_demo_result(demo);
    fq_demo_destroy(&demo);
  }
  zmq_ctx_term(ctx);
  close(lockfd);
  return status;
}
