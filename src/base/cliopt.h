/*
 * Command-line options from one table: getopt_long parses with it and
 * --help prints it, so what a program accepts and what its help says
 * cannot drift apart.  fleetq, fleetq-replay and fleetsim use it.
 *
 * The convention every fleetq program follows (docs/cli.md):
 *   --opt value and --opt=value alike; long names spelled out in full (no
 *   GNU abbreviations, so that a new option never changes what an old
 *   abbreviation meant); -h / --help on every program and subcommand;
 *   --version printing "<program> <version>"; errors on stderr as
 *   "<program>[ <subcommand>]: <message>"; exit status 2 for a usage
 *   error, 1 for a failure, 0 for success.
 *
 * Not thread safe (getopt_long keeps global state): parse in main's thread
 * before starting others.
 */
#ifndef FQ_CLIOPT_H
#define FQ_CLIOPT_H

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

/* One option.  A table is an array ending with an entry whose name is
 * NULL. */
typedef struct fq_opt {
  const char *name;  /* long name without "--" */
  int shortc;        /* one-letter alias ('h'), 0 for none */
  const char *arg;   /* placeholder of its value ("EP", "N"); NULL: takes no value */
  int id;            /* returned by fq_opt_next: unique in the table and >= 256,
                      * so that it can never be taken for a short option */
  const char *help;  /* what it does; '\n' starts a continuation line;
                      * NULL: parsed but not listed (refused legacy flags) */
} fq_opt_t;

/* The most entries a table may have. */
#define FQ_OPT_MAX 64

/* fq_opt_next's results besides an option's id. */
#define FQ_OPT_END (-1)   /* no option left: positional arguments follow */
#define FQ_OPT_ERROR (-2) /* a usage error, already printed: exit 2 */

/* The entries of -h / --help and --version, for every table. */
#define FQ_OPT_HELP(id) {"help", 'h', NULL, (id), "show this help and exit"}
#define FQ_OPT_VERSION(id) {"version", 0, NULL, (id), "print the version and exit"}

typedef struct fq_opt_parser {
  const char *prog;      /* "fleetq send": the prefix of every message */
  const fq_opt_t *opts;
  int argc;
  char **argv;           /* argv[0] is the program or subcommand name */
  const char *value;     /* after an id: the option's value, NULL if it takes none */
  const fq_opt_t *opt;   /* after an id: its table entry */
  int next;              /* after FQ_OPT_END: argv[next..argc) are the positional arguments */
  /* getopt_long's view of the table. */
  struct option lo[FQ_OPT_MAX + 1];
  char shorts[3 * FQ_OPT_MAX + 3];
  bool checked;
} fq_opt_parser_t;

/* Prepare to parse argv (argv[0] is skipped) with opts; prog names the
 * program in messages.  Options and positional arguments may be mixed
 * (getopt_long permutes argv); "--" ends the options.  A table with more
 * than FQ_OPT_MAX entries, or an entry with an empty name or an id below
 * 256, is a programmer error: abort(). */
void fq_opt_init(fq_opt_parser_t *p, const char *prog, const fq_opt_t *opts, int argc,
                 char **argv);

/* The next option: its id (p->value and p->opt set), FQ_OPT_END (then
 * p->next indexes the first positional argument), or FQ_OPT_ERROR after
 * printing "<prog>: <what is wrong> (see '<prog> --help')" on stderr: an
 * unknown or abbreviated option, a missing value, a value given to an
 * option that takes none. */
int fq_opt_next(fq_opt_parser_t *p);

/* Print the table as the option list of a --help text, one entry per
 * line ("  -h, --help           show this help and exit"), continuation
 * lines aligned; hidden entries are left out. */
void fq_opt_print(FILE *f, const fq_opt_t *opts);

/* Print "<prog>: <message> (see '<prog> --help')" on stderr; returns 2,
 * the exit status of a usage error. */
int fq_opt_usage_error(const char *prog, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Print "<prog>: <message>" on stderr; returns 1, the exit status of a
 * failure. */
int fq_opt_fail(const char *prog, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print "<program> <version>" on stdout (the first word of prog: "fleetq"
 * for "fleetq send") and return 0. */
int fq_opt_version(const char *prog);

#endif
