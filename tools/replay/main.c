/*
 * fleetq-replay: load testing with fleetq traffic files
 * (proto/traffic-format.md).  `gen` writes synthetic traffic, `run` plays
 * a file against a fleetqd on this host, open loop, and reports what it
 * measured.  This file holds the subcommand dispatch and shared helpers.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replay.h"

int fq_replay_usage_err(const char *cmd, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "fleetq-replay %s: ", cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, " (see 'fleetq-replay %s --help')\n", cmd);
  return 2;
}

bool fq_replay_parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out) {
  char *end = NULL;
  if (!s || !*s || *s == '-' || *s == '+') return false;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || !end || *end || v < lo || v > hi) return false;
  *out = v;
  return true;
}

bool fq_replay_parse_double(const char *s, double lo, double hi, double *out) {
  char *end = NULL;
  if (!s || !*s) return false;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || !end || *end || !isfinite(v) || v < lo || v > hi) return false;
  *out = v;
  return true;
}

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void fq_rng_seed(fq_rng_t *r, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t fq_rng_next(fq_rng_t *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double fq_rng_unit(fq_rng_t *r) { return (double)(fq_rng_next(r) >> 11) * 0x1.0p-53; }

uint64_t fq_rng_below(fq_rng_t *r, uint64_t n) {
  /* Rejection keeps the result unbiased for any n. */
  uint64_t lim = UINT64_MAX - UINT64_MAX % n;
  uint64_t v;
  do v = fq_rng_next(r);
  while (v >= lim);
  return v % n;
}

static const char g_usage[] =
    "usage: fleetq-replay <command> [options]\n"
    "\n"
    "  gen   write a synthetic traffic file (devices, command mix, Zipf or\n"
    "        uniform device choice, bursts, duplicates, energy share)\n"
    "  run   replay a traffic file against a fleetqd on this host, open loop,\n"
    "        and report rate, errors, ack and end-to-end latency\n"
    "\n"
    "'fleetq-replay <command> --help' describes each.  Traffic files are\n"
    "described in proto/traffic-format.md; `fleetq export` writes them from a\n"
    "daemon's history.\n";

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
      !strcmp(argv[1], "help")) {
    fputs(g_usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "gen")) return fq_replay_gen(argc - 1, argv + 1);
  if (!strcmp(argv[1], "run")) return fq_replay_run(argc - 1, argv + 1);
  fprintf(stderr, "fleetq-replay: unknown command '%s'\n%s", argv[1], g_usage);
  return 2;
}
