/*
 * fleetqd configuration: defaults, JSON file, flags.  See config.h.
 */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fleetq/wire.h"
#include "log.h"
#include "metrics.h"

void fq_config_defaults(fq_config_t *cfg) {
  memset(cfg, 0, sizeof *cfg);
  snprintf(cfg->data_dir, sizeof cfg->data_dir, "./fleetq-data");
  snprintf(cfg->listen, sizeof cfg->listen, "tcp://127.0.0.1:5555");
  snprintf(cfg->publish, sizeof cfg->publish, "tcp://127.0.0.1:5556");
  cfg->shards = 0;
  cfg->default_ttl_ms = FQ_WIRE_DEFAULT_TTL_MS;
  cfg->map_size_mb = 16384;
  cfg->batch_max = 4096;
  cfg->retention_s = FQ_CONFIG_RETENTION_S;
  cfg->dedupe_window_s = FQ_CONFIG_DEDUPE_WINDOW_S;
  cfg->max_msg_size = FQ_WIRE_MAX_MSG;
  cfg->client_hwm = 100000;
  cfg->client_reply_kb = 32768;
  cfg->pub_hwm = 10000;
  cfg->shard_hwm = 200000;
  cfg->log_level = FQ_LOG_INFO;
  snprintf(cfg->pairing_domain, sizeof cfg->pairing_domain, "fleetq.example.com");
  cfg->wake_poll_ms = 10000;
  cfg->retry_backoff_ms = 1000;
  cfg->http_timeout_ms = 10000;
  cfg->wake_timeout_ms = 120000;
  cfg->wake_max = 3;
  cfg->fleet_status_ttl_s = 3600;
  cfg->drain_timeout_ms = 15000;
  cfg->ipc_mode = 0600;
}

/* The usage text, in two literals: one would pass the 4095 characters C99
 * promises a string literal may hold. */
static const char usage_a[] =
    "usage: fleetqd [options]\n"
         "\n"
         "  --data DIR            data directory (default ./fleetq-data); one LMDB\n"
         "                        environment per shard under DIR/shard-N\n"
         "  --listen EP           request ROUTER endpoint (default tcp://127.0.0.1:5555)\n"
         "  --publish EP          status PUB endpoint (default tcp://127.0.0.1:5556)\n"
         "  --shards N            shard threads (default: number of CPUs); fixed for a\n"
         "                        data directory once created\n"
         "  --config FILE         JSON config file (keys: docs/configuration.md)\n"
         "  --default-ttl-ms N    deadline of a command without ttl_ms (default 60000)\n"
         "  --map-size-mb N       LMDB map size per shard (default 16384)\n"
         "  --max-store-mb N      let a shard's map grow up to N MiB when it fills and\n"
         "                        the disk has room (default: --map-size-mb, no growth)\n"
         "  --batch-max N         most requests in one group commit (default 4096)\n"
         "  --retention-s N       remove terminal commands and events older than N\n"
         "                        seconds (default 604800 = 7 days; 0 keeps everything)\n"
         "  --dedupe-window-s N   a tenant + key dedupes for N seconds after its command\n"
         "                        was accepted (default 86400; at most --retention-s)\n"
         "  --client-reply-kb N   replies one client may leave unread, in KiB (default\n"
         "                        32768); past it its replies are dropped\n"
         "  --client-hwm N        ROUTER high-water mark, in messages (default 100000)\n"
         "  --pub-hwm N           events queued per subscriber (default 10000); a\n"
         "                        slower subscriber loses events (seq gaps, history)\n"
         ;
static const char usage_b[] =
         "  --log-level L         debug | info | warn | error (default info); reloaded\n"
         "                        from --config on SIGHUP when no flag sets it\n"
         "  --log-format F        text | json (default text): json writes one object per\n"
         "                        line (ts, level, module, msg and fields)\n"
         "  --log-file FILE       write the log to FILE (appended, created 0640) instead\n"
         "                        of stderr; reopened on SIGHUP (logrotate)\n"
         "  --key PEM             fleet private key (P-256) for signing commands\n"
         "  --ca-file PEM         extra trusted CA for Fleet API TLS (the simulator's)\n"
         "  --pairing-domain D    domain of the virtual key pairing link\n"
         "                        (https://tesla.com/_ak/D in 'key not paired' reasons)\n"
         "  --allow-host H[:P]    a host besides Tesla's that a 421 may switch an account\n"
         "                        to (the simulator's)\n"
         "  --token-url URL       OAuth token endpoint (default: the account region's, or\n"
         "                        <base_url>/oauth2/v3/token for a custom base URL)\n"
         "  --wake-poll-ms N      poll a waking vehicle this often (default 10000)\n"
         "  --wake-timeout-ms N   give up on a wake-up after this long (default 120000)\n"
         "  --wake-max N          most wake_up requests per command (default 3)\n"
         "  --fleet-status-ttl N  ask fleet_status (key paired? signed commands needed?)\n"
         "                        before a VIN's first command and when the answer is\n"
         "                        older than N seconds (default 3600; 0 = no pre-check)\n"
         "  --retry-backoff-ms N  wait before retrying a transient failure (default 1000)\n"
         "  --http-timeout-ms N   Fleet API request timeout (default 10000)\n"
         "  --drain-timeout-ms N  on SIGTERM / SIGINT, wait this long for requests in\n"
         "                        flight to be answered (default 15000)\n"
         "  --device-rate R       commands per second per device (token bucket; default off)\n"
         "  --device-burst B      bucket size per device (default 1)\n"
         "  --account-rate R      commands per second per account (default off)\n"
         "  --account-burst B     bucket size per account (default 1)\n"
         "  --no-dispatch         accept, store and serve commands but send none: they\n"
         "                        stay queued until cancelled or expired (ingest tests\n"
         "                        and benchmarks, a maintenance pause)\n"
         "  --curve-secret FILE   CURVE server key file (from `fleetq curve-keygen`):\n"
         "                        clients must use CURVE and be listed in --clients\n"
         "  --clients FILE        JSON list of client keys with their tenants and roles\n"
         "                        (docs/security.md); reloaded on SIGHUP\n"
         "  --ipc-mode MODE       octal mode of ipc:// socket files (default 0600)\n"
         "  --metrics HOST:PORT   serve Prometheus metrics on http://HOST:PORT/metrics\n"
         "                        (:PORT or PORT bind 127.0.0.1; default off)\n"
         "  --cluster URLS        cluster mode (docs/cluster.md): the NATS JetStream\n"
         "                        servers, nats://host:port,...; needs --node-id\n"
         "  --node-id ID          this node's name in the cluster (1-32 of A-Z a-z 0-9 _ -)\n"
         "  --cluster-advertise EP  where the other nodes forward requests for the\n"
         "                        shards this node owns (default: --listen)\n"
         "  --demo                run the demo: a fleetsim child process as Fleet API and\n"
         "                        a scripted tour; fleetsim is taken from beside fleetqd\n"
         "                        or from the environment variable FQ_FLEETSIM\n"
         "  -h, --help            this text\n"
         "  --version             print \"fleetqd <version>\" and exit\n"
         "\n"
         "Every flag takes its value as --flag VALUE or --flag=VALUE.\n"
         "\n"
         "Signals: SIGTERM / SIGINT stop: no new request leaves, the ones in flight get\n"
         "up to --drain-timeout-ms to be answered, commands never sent stay queued for\n"
         "the next start; then exit 0.  SIGHUP reopens --log-file, reloads the log\n"
         "level (--config) and the clients file (with CURVE), and never stops the\n"
         "daemon.\n"
         "\n"
         "Without --curve-secret, fleetqd binds only loopback and ipc:// endpoints and\n"
         "any local user can send it commands; see docs/security.md.\n";

const char *fq_config_usage(void) {
  static char text[sizeof usage_a + sizeof usage_b];
  if (!text[0]) {
    memcpy(text, usage_a, sizeof usage_a - 1);
    memcpy(text + sizeof usage_a - 1, usage_b, sizeof usage_b);
  }
  return text;
}

static int set_str(char *dst, size_t cap, const char *v, const char *name, fq_err_t *err) {
  if (strlen(v) >= cap) return fq_errf(err, FQ_ECONFIG, "%s: value too long", name);
  snprintf(dst, cap, "%s", v);
  return 0;
}

static int parse_int(const char *v, long long lo, long long hi, long long *out, const char *name,
                     fq_err_t *err) {
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (errno || end == v || *end)
    return fq_errf(err, FQ_ECONFIG, "%s: \"%s\" is not an integer", name, v);
  if (x < lo || x > hi)
    return fq_errf(err, FQ_ECONFIG, "%s: %lld is out of range %lld..%lld", name, x, lo, hi);
  *out = x;
  return 0;
}

/* One setting by name, from a string (flags) or a JSON value (file). */
static int apply(fq_config_t *c, const char *name, const char *sval, json_t *jval, fq_err_t *err) {
  char buf[64];
  const char *v = sval;
  if (jval) {
    if (json_is_string(jval)) {
      v = json_string_value(jval);
    } else if (json_is_integer(jval)) {
      snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(jval));
      v = buf;
    } else if (json_is_boolean(jval)) {
      v = json_is_true(jval) ? "true" : "false";
    } else if (json_is_real(jval)) {
      /* Rates and bursts take fractions ("device_rate": 0.5); an integer
       * setting given a fraction is refused by its own parser. */
      snprintf(buf, sizeof buf, "%.17g", json_real_value(jval));
      v = buf;
    } else {
      return fq_errf(err, FQ_ECONFIG, "%s: expected a string, number or boolean", name);
    }
  }
  long long x = 0;
  int rc;
  if (!strcmp(name, "data")) return set_str(c->data_dir, sizeof c->data_dir, v, name, err);
  if (!strcmp(name, "listen")) return set_str(c->listen, sizeof c->listen, v, name, err);
  if (!strcmp(name, "publish")) return set_str(c->publish, sizeof c->publish, v, name, err);
  if (!strcmp(name, "key")) return set_str(c->key_file, sizeof c->key_file, v, name, err);
  if (!strcmp(name, "ca-file")) return set_str(c->ca_file, sizeof c->ca_file, v, name, err);
  if (!strcmp(name, "pairing-domain"))
    return set_str(c->pairing_domain, sizeof c->pairing_domain, v, name, err);
  if (!strcmp(name, "allow-host")) return set_str(c->allow_host, sizeof c->allow_host, v, name, err);
  if (!strcmp(name, "token-url")) return set_str(c->token_url, sizeof c->token_url, v, name, err);
  if (!strcmp(name, "curve-secret"))
    return set_str(c->curve_secret, sizeof c->curve_secret, v, name, err);
  if (!strcmp(name, "clients")) return set_str(c->clients, sizeof c->clients, v, name, err);
  if (!strcmp(name, "metrics")) {
    /* Checked here, so a typo is a usage error, not a failure at start. */
    struct sockaddr_storage sa;
    socklen_t sl;
    if ((rc = fq_metrics_parse_addr(v, &sa, &sl, err)) != 0) return rc;
    return set_str(c->metrics, sizeof c->metrics, v, name, err);
  }
  if (!strcmp(name, "log-file")) return set_str(c->log_file, sizeof c->log_file, v, name, err);
  if (!strcmp(name, "cluster")) return set_str(c->cluster, sizeof c->cluster, v, name, err);
  if (!strcmp(name, "node-id")) return set_str(c->node_id, sizeof c->node_id, v, name, err);
  if (!strcmp(name, "cluster-advertise"))
    return set_str(c->cluster_advertise, sizeof c->cluster_advertise, v, name, err);
  if (!strcmp(name, "log-format")) {
    int f = fq_log_parse_format(v);
    if (f < 0) return fq_errf(err, FQ_ECONFIG, "log-format: \"%s\" is not text|json", v);
    c->log_format = f;
    return 0;
  }
  if (!strcmp(name, "ipc-mode")) {
    char *end;
    errno = 0;
    unsigned long m = strtoul(v, &end, 8);
    if (errno || end == v || *end || m > 0777 || !(m & 0600))
      return fq_errf(err, FQ_ECONFIG,
                     "ipc-mode: \"%s\" is not an octal mode 0600..0777 that lets the owner "
                     "read and write (e.g. 0600, 0660)",
                     v);
    if ((m & 0600) != 0600)
      return fq_errf(err, FQ_ECONFIG, "ipc-mode: %03lo must let the owner read and write", m);
    c->ipc_mode = (unsigned)m;
    return 0;
  }
  struct {
    const char *name;
    double *dst;
  } reals[] = {{"device-rate", &c->device_rate},
               {"device-burst", &c->device_burst},
               {"account-rate", &c->account_rate},
               {"account-burst", &c->account_burst}};
  for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++) {
    if (strcmp(name, reals[i].name) != 0) continue;
    char *end;
    double dv = strtod(v, &end);
    if (end == v || *end || dv < 0 || dv > 1e6)
      return fq_errf(err, FQ_ECONFIG, "%s: \"%s\" is not a number in 0..1000000", name, v);
    *reals[i].dst = dv;
    return 0;
  }
  if (!strcmp(name, "demo")) {
    c->demo = !strcmp(v, "true") || !strcmp(v, "1");
    return 0;
  }
  if (!strcmp(name, "no-dispatch")) {
    if (strcmp(v, "true") && strcmp(v, "false"))
      return fq_errf(err, FQ_ECONFIG, "no-dispatch: expected true or false");
    c->no_dispatch = !strcmp(v, "true");
    return 0;
  }
  if (!strcmp(name, "log-level")) {
    int l = fq_log_parse_level(v);
    if (l < 0) return fq_errf(err, FQ_ECONFIG, "log-level: \"%s\" is not debug|info|warn|error", v);
    c->log_level = l;
    return 0;
  }
  struct {
    const char *name;
    long long lo, hi;
  } ints[] = {{"shards", 1, 64},
              {"default-ttl-ms", 1, FQ_WIRE_MAX_TTL_MS},
              {"map-size-mb", 16, 1 << 24},
              {"batch-max", 1, 65536},
              {"max-msg-size", 1024, 64 << 20},
              {"client-hwm", 0, 10000000},
              {"pub-hwm", 0, 10000000},
              {"shard-hwm", 1, 10000000},
              {"wake-poll-ms", 10, 3600000},
              {"retry-backoff-ms", 1, 3600000},
              {"http-timeout-ms", 100, 600000},
              {"wake-timeout-ms", 100, 86400000},
              {"wake-max", 1, 100},
              {"drain-timeout-ms", 0, 3600000},
              {"retention-s", 0, FQ_CONFIG_MAX_S},
              {"dedupe-window-s", 1, FQ_CONFIG_MAX_S},
              {"client-reply-kb", 8192, 4194304},
              {"max-store-mb", 16, 1 << 24},
              {"fleet-status-ttl", 0, 86400}};
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
    if (strcmp(name, ints[i].name) != 0) continue;
    if ((rc = parse_int(v, ints[i].lo, ints[i].hi, &x, name, err)) != 0) return rc;
    switch (i) {
      case 0: c->shards = (unsigned)x; break;
      case 1: c->default_ttl_ms = x; break;
      case 2: c->map_size_mb = (uint64_t)x; break;
      case 3: c->batch_max = (unsigned)x; break;
      case 4: c->max_msg_size = (int)x; break;
      case 5: c->client_hwm = (int)x; break;
      case 6: c->pub_hwm = (int)x; break;
      case 7: c->shard_hwm = (int)x; break;
      case 8: c->wake_poll_ms = x; break;
      case 9: c->retry_backoff_ms = x; break;
      case 10: c->http_timeout_ms = x; break;
      case 11: c->wake_timeout_ms = x; break;
      case 12: c->wake_max = (int)x; break;
      case 13: c->drain_timeout_ms = x; break;
      case 14: c->retention_s = x; break;
      case 15: c->dedupe_window_s = x; break;
      case 16: c->client_reply_kb = (uint64_t)x; break;
      case 17: c->max_store_mb = (uint64_t)x; break;
      case 18: c->fleet_status_ttl_s = x; break;
    }
    return 0;
  }
  return fq_errf(err, FQ_ECONFIG, "unknown setting \"%s\"", name);
}

/* "budgets": {"<tenant>" | "*": {"daily_billable_requests": N,
 * "daily_wakeups": M}}: the same format as the clients file's (budget.h). */
static int load_budgets(fq_config_t *c, json_t *v, fq_err_t *err) {
  return fq_budget_parse(v, "", c->budgets, &c->nbudgets, err);
}

int fq_config_load_file(fq_config_t *cfg, const char *path, fq_err_t *err) {
  json_error_t je;
  json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
  if (!root)
    return fq_errf(err, FQ_ECONFIG, "%s:%d:%d: %s", path, je.line, je.column, je.text);
  int rc = 0;
  if (!json_is_object(root)) {
    rc = fq_errf(err, FQ_ECONFIG, "%s: expected a JSON object", path);
    goto out;
  }
  const char *k;
  json_t *v;
  json_object_foreach(root, k, v) {
    /* File keys use underscores; flags use dashes. */
    if (strcmp(k, "budgets") == 0) {
      rc = load_budgets(cfg, v, err);
    } else {
      char name[64];
      snprintf(name, sizeof name, "%s", k);
      for (char *p = name; *p; p++)
        if (*p == '_') *p = '-';
      rc = apply(cfg, name, NULL, v, err);
    }
    if (rc) {
      char inner[FQ_ERRMSG_MAX];
      snprintf(inner, sizeof inner, "%s", err->msg);
      fq_errf(err, FQ_ECONFIG, "%s: %s", path, inner);
      goto out;
    }
  }
out:
  json_decref(root);
  return rc;
}

/* "--name=value" and "--name value" alike: the name (into name[]) and
 * where its value is, NULL when the next argument holds it. */
static int split_flag(const char *a, char *name, size_t cap, const char **value, fq_err_t *err) {
  const char *eq = strchr(a, '=');
  size_t n = eq ? (size_t)(eq - a) : strlen(a);
  if (n >= cap) return fq_errf(err, FQ_ECONFIG, "unknown option %.*s (see --help)", (int)n, a);
  memcpy(name, a, n);
  name[n] = 0;
  *value = eq ? eq + 1 : NULL;
  return 0;
}

int fq_config_from_args(fq_config_t *cfg, int argc, char **argv, fq_err_t *err) {
  int rc;
  char flag[80];
  const char *v = NULL;
  for (int i = 1; i < argc; i++) {
    if (strncmp(argv[i], "--config", 8) != 0 || (argv[i][8] && argv[i][8] != '=')) continue;
    if ((rc = split_flag(argv[i], flag, sizeof flag, &v, err)) != 0) return rc;
    if (!v && i + 1 >= argc) return fq_errf(err, FQ_ECONFIG, "--config needs a file");
    if ((rc = fq_config_load_file(cfg, v ? v : argv[i + 1], err)) != 0) return rc;
  }
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(fq_config_usage(), stdout);
      return 1;
    }
    if (!strcmp(a, "--version")) {
      printf("fleetqd %s\n", FQ_VERSION);
      return 1;
    }
    if (strncmp(a, "--", 2) != 0)
      return fq_errf(err, FQ_ECONFIG, "unexpected argument \"%s\" (see --help)", a);
    if ((rc = split_flag(a, flag, sizeof flag, &v, err)) != 0) return rc;
    const char *name = flag + 2;
    if (!strcmp(name, "demo") || !strcmp(name, "no-dispatch")) {
      /* Switches: no value follows. */
      if (v) return fq_errf(err, FQ_ECONFIG, "%s takes no value", flag);
      if (apply(cfg, name, "true", NULL, err) != 0) return FQ_ECONFIG;
      continue;
    }
    if (!v) {
      if (i + 1 >= argc) return fq_errf(err, FQ_ECONFIG, "%s needs a value", flag);
      v = argv[++i];
    }
    if (!strcmp(name, "config")) continue;
    if ((rc = apply(cfg, name, v, NULL, err)) != 0) {
      if (strstr(err->msg, "unknown setting"))
        fq_errf(err, FQ_ECONFIG, "unknown option %s (see --help)", flag);
      return rc;
    }
  }
  return fq_config_check(cfg, err);
}

int fq_config_check(const fq_config_t *cfg, fq_err_t *err) {
  /* A key cannot dedupe against a command that is no longer stored: a
   * retry after the command was pruned would silently run it again. */
  if (cfg->retention_s > 0 && cfg->dedupe_window_s > cfg->retention_s)
    return fq_errf(err, FQ_ECONFIG,
                   "dedupe window (%lld s) is longer than the retention (%lld s): a key cannot "
                   "dedupe against a command that was already removed; lower "
                   "--dedupe-window-s (dedupe_window_s) or raise --retention-s (retention_s)",
                   (long long)cfg->dedupe_window_s, (long long)cfg->retention_s);
  if (!cfg->cluster[0] != !cfg->node_id[0])
    return fq_errf(err, FQ_ECONFIG, "--cluster and --node-id go together (docs/cluster.md)");
  if (cfg->cluster[0] && cfg->curve_secret[0])
    return fq_errf(err, FQ_ECONFIG,
                   "--cluster with --curve-secret is not supported yet: the nodes forward "
                   "requests to each other in plaintext (docs/cluster.md)");
  if (cfg->cluster[0] && cfg->demo)
    return fq_errf(err, FQ_ECONFIG, "--demo runs a single node: leave --cluster out");
  /* The map can grow but never shrink. */
  if (cfg->max_store_mb && cfg->max_store_mb < cfg->map_size_mb)
    return fq_errf(err, FQ_ECONFIG,
                   "max-store-mb (%llu) is below map-size-mb (%llu): the map never shrinks; "
                   "give at least the map size, or leave max-store-mb out (no growth)",
                   (unsigned long long)cfg->max_store_mb, (unsigned long long)cfg->map_size_mb);
  return 0;
}
