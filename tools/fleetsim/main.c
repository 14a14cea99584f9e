/*
 * fleetsim: the Fleet API + vehicle simulator as a program.
 *   fleetsim --listen HOST:PORT --config FILE [--tls-cert PEM --tls-key PEM]
 *            [--gen-vehicles N] [--log-level LEVEL]
 * Prints "fleetsim listening on http(s)://HOST:PORT" once it serves, then
 * runs until SIGINT or SIGTERM.  Everything else lives in src/sim*.c.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sim.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: fleetsim --listen HOST:PORT --config FILE [--tls-cert PEM --tls-key PEM]\n"
          "                [--gen-vehicles N] [--log-level debug|info|warn|error]\n"
          "PORT 0 picks a free port; the bound address is printed on stdout.\n");
}

int main(int argc, char **argv) {
  const char *listen = "127.0.0.1:0", *config = NULL, *cert = NULL, *key = NULL;
  unsigned long gen = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 0;
    }
    if (!v) {
      usage(stderr);
      return 2;
    }
    i++;
    if (strcmp(a, "--listen") == 0) listen = v;
    else if (strcmp(a, "--config") == 0) config = v;
    else if (strcmp(a, "--tls-cert") == 0) cert = v;
    else if (strcmp(a, "--tls-key") == 0) key = v;
    else if (strcmp(a, "--gen-vehicles") == 0) {
      char *end;
      errno = 0;
      gen = strtoul(v, &end, 10);
      if (errno || *end || gen > 10000000) {
        fprintf(stderr, "fleetsim: --gen-vehicles wants a number up to 10000000\n");
        return 2;
      }
    } else if (strcmp(a, "--log-level") == 0) {
      int lvl = fq_log_parse_level(v);
      if (lvl < 0) {
        usage(stderr);
        return 2;
      }
      fq_log_set_level(lvl);
    } else {
      usage(stderr);
      return 2;
    }
  }
  if (!config) {
    usage(stderr);
    return 2;
  }
  char host[256];
  const char *colon = strrchr(listen, ':');
  if (!colon || (size_t)(colon - listen) >= sizeof host) {
    fprintf(stderr, "fleetsim: --listen wants HOST:PORT\n");
    return 2;
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
    fprintf(stderr, "fleetsim: bad port in --listen %s\n", listen);
    return 2;
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
