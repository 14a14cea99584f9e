/*
 * fleetsim: the Fleet API + vehicle simulator as a program.
 *   fleetsim --listen HOST:PORT --config FILE [--tls-cert PEM --tls-key PEM]
 *            [--gen-vehicles N] [--log-level LEVEL] [--log-format text|json]
 * (options from one table: cliopt.h)
 * Prints "fleetsim listening on http(s)://HOST:PORT" once it serves, then
 * runs until SIGINT or SIGTERM.  Everything else lives in src/sim*.c.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cliopt.h"
#include "log.h"
#include "sim.h"

enum {
  S_HELP = 1000, S_VERSION, S_LISTEN, S_CONFIG, S_CERT, S_KEY, S_GEN, S_LOG_LEVEL, S_LOG_FORMAT
};

/* fleetsim's options: they parse the command line and make --help. */
static const fq_opt_t g_opts[] = {
    FQ_OPT_HELP(S_HELP),
    FQ_OPT_VERSION(S_VERSION),
    {"listen", 0, "HOST:PORT", S_LISTEN,
     "address to serve on (default 127.0.0.1:0; port 0\n"
     "picks a free one; [::1]:PORT for IPv6)"},
    {"config", 0, "FILE", S_CONFIG, "the simulated world: accounts, vehicles, sites,\n"
                                     "scenarios (JSON, docs/fleetsim.md; required)"},
    {"tls-cert", 0, "PEM", S_CERT, "serve HTTPS with this certificate ..."},
    {"tls-key", 0, "PEM", S_KEY, "... and this key"},
    {"gen-vehicles", 0, "N", S_GEN, "add N generated vehicles (up to 10,000,000)"},
    {"log-level", 0, "LEVEL", S_LOG_LEVEL, "debug, info, warn or error (default info)"},
    {"log-format", 0, "F", S_LOG_FORMAT, "text or json (default text), as fleetqd's"},
    {NULL, 0, NULL, 0, NULL},
};

static void usage(FILE *f) {
  fprintf(f,
          "usage: fleetsim --config FILE [--listen HOST:PORT] [--tls-cert PEM --tls-key PEM]\n"
          "                [--gen-vehicles N] [--log-level debug|info|warn|error]\n"
          "                [--log-format text|json]\n"
          "\n"
          "The Fleet API and vehicle simulator (docs/fleetsim.md).  Prints\n"
          "\"fleetsim listening on http(s)://HOST:PORT\" on stdout once it serves,\n"
          "then runs until SIGINT or SIGTERM.\n"
          "\n"
          "GET /api/1/partner_accounts/public_key?domain=D answers the config's\n"
          "fleet_public_key (the key the cars pair with) for every domain, or, with\n"
          "the config key partner_keys {\"D\": \"PEM file or hex\"}, only the domains\n"
          "it lists (for fleetq doctor's failing cases).\n"
          "\n"
          "Options:\n");
  fq_opt_print(f, g_opts);
  fprintf(f, "\nExit status: 0 stopped by a signal, 1 cannot start (bad config file,\n"
             "address in use, TLS files), 2 usage error.\n");
}

int main(int argc, char **argv) {
  const char *listen = "127.0.0.1:0", *config = NULL, *cert = NULL, *key = NULL;
  unsigned long gen = 0;
  fq_opt_parser_t p;
  fq_opt_init(&p, "fleetsim", g_opts, argc, argv);
  int c;
  while ((c = fq_opt_next(&p)) != FQ_OPT_END) {
    const char *v = p.value;
    switch (c) {
    case FQ_OPT_ERROR: return 2;
    case S_HELP: usage(stdout); return 0;
    case S_VERSION: return fq_opt_version("fleetsim");
    case S_LISTEN: listen = v; break;
    case S_CONFIG: config = v; break;
    case S_CERT: cert = v; break;
    case S_KEY: key = v; break;
    case S_GEN: {
      char *end;
      errno = 0;
      gen = strtoul(v, &end, 10);
      if (errno || end == v || *end || *v == '-' || gen > 10000000)
        return fq_opt_usage_error("fleetsim", "--gen-vehicles wants a number up to 10000000");
      break;
    }
    case S_LOG_LEVEL: {
      int lvl = fq_log_parse_level(v);
      if (lvl < 0)
        return fq_opt_usage_error("fleetsim", "--log-level wants debug, info, warn or error");
      fq_log_set_level(lvl);
      break;
    }
    case S_LOG_FORMAT: {
      int f = fq_log_parse_format(v);
      if (f < 0) return fq_opt_usage_error("fleetsim", "--log-format wants text or json");
      fq_log_set_format(f);
      break;
    }
    default: return fq_opt_usage_error("fleetsim", "option --%s is not handled", p.opt->name);
    }
  }
  if (p.next < argc)
    return fq_opt_usage_error("fleetsim", "unexpected argument '%s'", argv[p.next]);
  if (!config) return fq_opt_usage_error("fleetsim", "--config FILE is required");
  if ((cert != NULL) != (key != NULL))
    return fq_opt_usage_error("fleetsim", "give both --tls-cert and --tls-key, or neither");
  char host[256];
  const char *colon = strrchr(listen, ':');
  if (!colon || (size_t)(colon - listen) >= sizeof host) {
    return fq_opt_usage_error("fleetsim", "--listen wants HOST:PORT");
  }
  memcpy(host, listen, (size_t)(colon - listen));
  host[colon - listen] = 0;
  /* "[::1]:8443" style IPv6 literals. */
  char *h = host;
  if (h[0] == '[' && h[strlen(h) - 1] == ']') {
    h[strlen(h) - 1] = 0;
    h++;
  }
  char *end;
  unsigned long port = strtoul(colon + 1, &end, 10);
  if (*end || port > 65535) {
    return fq_opt_usage_error("fleetsim", "bad port in --listen %s", listen);
  }

  /* Block the stop signals before any thread starts so that only sigwait
   * below receives them. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  fq_err_t err = {0};
  fq_sim_t *sim = fq_sim_new(config, &err);
  if (!sim) {
    fprintf(stderr, "fleetsim: %s\n", err.msg);
    return 1;
  }
  if (gen && fq_sim_gen_vehicles(sim, (uint32_t)gen, &err)) {
    fprintf(stderr, "fleetsim: %s\n", err.msg);
    fq_sim_destroy(&sim);
    return 1;
  }
  if (fq_sim_start(sim, h, (uint16_t)port, cert, key, &err)) {
    fprintf(stderr, "fleetsim: %s\n", err.msg);
    fq_sim_destroy(&sim);
    return 1;
  }
  printf("fleetsim listening on %s://%s%s%s:%u\n", cert ? "https" : "http",
         strchr(h, ':') ? "[" : "", h, strchr(h, ':') ? "]" : "", (unsigned)fq_sim_port(sim));
  fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  fq_sim_destroy(&sim);
  return 0;
}
