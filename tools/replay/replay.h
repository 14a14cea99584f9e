/*
 * fleetq-replay: shared declarations of its subcommands (gen.c, run.c) and
 * the option helpers they both use (opts.c).  Seeded random numbers come
 * from the base layer's rng.h.
 */
#ifndef FQ_REPLAY_H
#define FQ_REPLAY_H

#include <stdbool.h>
#include <stdint.h>

#include "fleetq/buf.h"

/* Subcommand entry points: argv[0] is the subcommand name.  Return the
 * exit status: 0 ok, 1 failure, 2 usage error. */
int fq_replay_gen(int argc, char **argv);
int fq_replay_run(int argc, char **argv);

/* Option helpers (opts.c). */

/* Print "fleetq-replay <cmd>: <message>" and a pointer to --help on
 * stderr; returns 2. */
int fq_replay_usage_err(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Strict number parsing of option values: the whole string must be a
 * number within [lo, hi].  Return false otherwise. */
bool fq_replay_parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out);
bool fq_replay_parse_double(const char *s, double lo, double hi, double *out);

/* Append s to out as a JSON string (quoted, escaped) for the --json
 * reports of gen and run.  Returns 0 or FQ_ETOOLARGE / -ENOMEM. */
int fq_replay_json_str(fq_buf_t *out, const char *s);

#endif
