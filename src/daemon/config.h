/*
 * fleetqd configuration: defaults, an optional JSON config file
 * (--config), then command-line flags, each overriding the one before.
 * Every key of the file is documented in docs/configuration.md; an unknown
 * key is an error, so a typo never silently falls back to a default.
 */
#ifndef FQ_CONFIG_H
#define FQ_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "budget.h"
#include "fleetq/error.h"

typedef struct fq_config {
  char data_dir[1024];
  char listen[256];
  char publish[256];
  unsigned shards;           /* 0 = number of online CPUs */
  int64_t default_ttl_ms;
  uint64_t map_size_mb;      /* LMDB map size per shard */
  uint64_t max_store_mb;     /* the most a shard's map may grow to; 0 = map_size_mb */
  unsigned batch_max;        /* requests per group commit */
  int64_t retention_s;       /* prune terminal commands and events older (0: never) */
  int64_t dedupe_window_s;   /* how long a (tenant, key) dedupes; <= retention_s */
  int max_msg_size;
  int client_hwm, pub_hwm, shard_hwm;
  uint64_t client_reply_kb;  /* unread replies one client may hold (KiB) */
  int log_level;
  int log_format;            /* FQ_LOG_TEXT or FQ_LOG_JSON */
  char log_file[1024];       /* "" = stderr */
  /* Dispatch (Fleet API). */
  char key_file[1024];
  char ca_file[1024];
  char pairing_domain[256];
  char allow_host[256];      /* extra host[:port] a 421 may switch to */
  char token_url[512];       /* override of the OAuth token endpoint */
  int64_t wake_poll_ms, retry_backoff_ms, http_timeout_ms, wake_timeout_ms;
  int wake_max;              /* most wake_up requests per command */
  int64_t fleet_status_ttl_s; /* fleet_status pre-check answers trusted this long; 0 = off */
  int64_t drain_timeout_ms;  /* on SIGTERM: longest wait for requests in flight */
  double device_rate, device_burst, account_rate, account_burst;
  bool demo;
  bool no_dispatch;          /* store and serve commands, send none (they stay queued) */
  /* Security (docs/security.md). */
  char curve_secret[1024];   /* server key file (fleetq curve-keygen); "" = no CURVE */
  char clients[1024];        /* clients file (JSON); required with curve_secret */
  unsigned ipc_mode;         /* mode of ipc:// socket files (default 0600) */
  char metrics[128];         /* --metrics HOST:PORT of GET /metrics; "" = off (metrics.h) */
  /* Cluster mode (docs/cluster.md); "" = a single node. */
  char cluster[2048];        /* --cluster nats://h:p,... */
  char node_id[64];          /* --node-id */
  char cluster_advertise[256]; /* --cluster-advertise EP; "" = --listen */
  /* "budgets" of the config file (budget.h): per tenant, "*" the default. */
  fq_budget_limit_t budgets[FQ_BUDGETS_MAX];
  size_t nbudgets;
} fq_config_t;

#define FQ_CONFIG_RETENTION_S 604800     /* 7 days */
#define FQ_CONFIG_DEDUPE_WINDOW_S 86400   /* 24 hours */
#define FQ_CONFIG_MAX_S 315360000LL       /* 10 years: bounds both */

/* Fill cfg with the built-in defaults. */
void fq_config_defaults(fq_config_t *cfg);

/* Apply a JSON config file on top of cfg.  FQ_ECONFIG with err naming the
 * key and what is wrong. */
int fq_config_load_file(fq_config_t *cfg, const char *path, fq_err_t *err);

/* Apply argv (fleetqd's flags, "--flag value" or "--flag=value") on top
 * of cfg; --config is read first wherever it appears.  Returns 0, 1 when
 * --help or --version was printed (exit 0), or FQ_ECONFIG. */
int fq_config_from_args(fq_config_t *cfg, int argc, char **argv, fq_err_t *err);

/* The checks between settings (run by fq_config_from_args once every
 * source was applied): the dedupe window must not exceed the retention. */
int fq_config_check(const fq_config_t *cfg, fq_err_t *err);

/* Usage text of fleetqd. */
const char *fq_config_usage(void);

#endif
