/*
 * fleetq-replay: shared declarations of its subcommands (gen.c, run.c) and
 * the small helpers they both use (option parsing, seeded random numbers).
 */
#ifndef FQ_REPLAY_H
#define FQ_REPLAY_H

#include <stdbool.h>
#include <stdint.h>

/* Subcommand entry points: argv[0] is the subcommand name.  Return the
 * exit status: 0 ok, 1 failure, 2 usage error. */
int fq_replay_gen(int argc, char **argv);
int fq_replay_run(int argc, char **argv);

/* Print "fleetq-replay <cmd>: <message>" and a pointer to --help on
 * stderr; returns 2. */
int fq_replay_usage_err(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Strict number parsing of option values: the whole string must be a
 * number within [lo, hi].  Return false otherwise. */
bool fq_replay_parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out);
bool fq_replay_parse_double(const char *s, double lo, double hi, double *out);

/* A small, fast, seeded generator (xoshiro256**): the same seed gives the
 * same traffic on every machine. */
typedef struct fq_rng {
  uint64_t s[4];
} fq_rng_t;

void fq_rng_seed(fq_rng_t *r, uint64_t seed);
uint64_t fq_rng_next(fq_rng_t *r);
/* Uniform in [0, 1). */
double fq_rng_unit(fq_rng_t *r);
/* Uniform in [0, n); n > 0. */
uint64_t fq_rng_below(fq_rng_t *r, uint64_t n);

#endif
