/*
 * The fleetq CLI: every subcommand lives in its own tools/fleetq/cmd_*.c
 * file and registers itself at load time with FQ_CLI_COMMAND, so files can
 * be added without touching main.c.
 *
 * Every subcommand follows one convention (docs/cli.md, cliopt.h): its
 * options come from one table (fq_opt_t) that both parses them and prints
 * its --help, --opt value and --opt=value alike, -h / --help and
 * --version everywhere, --json wherever results are printed, messages as
 * "fleetq <command>: ...", exit status 0 success, 1 failure, 2 usage.
 */
#ifndef FQ_CLI_H
#define FQ_CLI_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cliopt.h"

/* A subcommand's entry point: argv[0] is the subcommand name.  Returns the
 * process exit status (0 ok, 1 the request failed, 2 usage error). */
typedef int (*fq_cli_fn)(int argc, char **argv);

void fq_cli_register(const char *name, fq_cli_fn fn, const char *summary);

#define FQ_CLI_COMMAND(name, fn, summary)                                      \
  __attribute__((constructor)) static void fq_cli_reg_##fn(void) {             \
    fq_cli_register(name, fn, summary);                                        \
  }

/* Default daemon endpoints for --endpoint and --publish. */
#define FQ_CLI_DEFAULT_ENDPOINT "tcp://127.0.0.1:5555"
#define FQ_CLI_DEFAULT_PUBLISH "tcp://127.0.0.1:5556"

/* ------------------------------------------------------------------ */
/* --help                                                               */

/* What a subcommand's --help says besides its option list. */
typedef struct fq_cli_doc {
  const char *usage; /* the synopsis line(s) after "usage: " */
  const char *about; /* what it does (paragraphs, '\n'-terminated) */
  const char *notes; /* after the option list, or NULL */
  const char *exit;  /* what each exit status means, e.g. "0 ok, 1 ..., 2 usage error" */
} fq_cli_doc_t;

/* Print a --help text: usage, about, "Options:" with the table
 * (fq_opt_print), the notes, and "Exit status: <exit>". */
void fq_cli_help(FILE *f, const fq_cli_doc_t *doc, const fq_opt_t *opts);

/* ------------------------------------------------------------------ */
/* Option-table entries the subcommands share                          */

#define FQ_CLI_OPT_ENDPOINT(id)                                                \
  {"endpoint", 0, "EP", (id), "fleetqd's request endpoint (default\n" FQ_CLI_DEFAULT_ENDPOINT ")"}
#define FQ_CLI_OPT_PUBLISH(id)                                                 \
  {"publish", 0, "EP", (id), "fleetqd's status publisher (default\n" FQ_CLI_DEFAULT_PUBLISH ")"}
#define FQ_CLI_OPT_TIMEOUT(id, what) {"timeout", 0, "S", (id), what}

/* --curve-key and --server-key, for a fleetqd with CURVE (every
 * subcommand that connects; resolved by fq_cli_conn_resolve). */
#define FQ_CLI_OPT_CURVE(key_id, server_id)                                    \
  {"curve-key", 0, "FILE", (key_id),                                           \
   "this client's CURVE key pair file (fleetq\n"                               \
   "curve-keygen, mode 0600); default $FLEETQ_CURVE_KEY"},                     \
      {"server-key", 0, "Z85", (server_id),                                    \
       "fleetqd's CURVE public key (40 characters);\n"                         \
       "default $FLEETQ_SERVER_KEY"}

/* The note every connecting subcommand's --help ends with. */
#define FQ_CLI_CURVE_NOTE                                                      \
  "For a fleetqd with CURVE (--curve-secret) give both --curve-key and\n"     \
  "--server-key, or neither for a plaintext fleetqd on this host; a flag\n"   \
  "wins over its variable.  A refused key fails at once (exit 1, auth_error).\n"

struct fq_client_opts;

/* Complete the connection options of subcommand cmd after parsing: the
 * CURVE settings the flags left unset come from FLEETQ_CURVE_KEY /
 * FLEETQ_SERVER_KEY, then both-or-neither, the server key and the key
 * file are checked (fq_client_opts_resolve).  Returns -1 when fine, or 2
 * after printing "fleetq <cmd>: <why>" (a usage error). */
int fq_cli_conn_resolve(const char *cmd, struct fq_client_opts *o);

/* After parsing, for a one-request subcommand: fq_cli_conn_resolve, then
 * the endpoint and the reply timeout into o.  -1 when fine, else the exit
 * status (2, a usage error, printed). */
int fq_cli_conn_finish(const char *cmd, struct fq_client_opts *o, const char *endpoint,
                       double timeout_s);

/* --timeout SECONDS as the one-request subcommands take it: > 0, at most
 * an hour.  0 with *s set, or 2 after printing the usage error. */
int fq_cli_parse_timeout(const char *prog, const char *v, double *s);

/* A one-request subcommand's exchange (health, usage): connect with o,
 * send req, wait for the reply into raw and decode it into *m (which
 * points into raw).  FQ_CLI_ASK_OK with *m to free (fq_msg_free) when
 * fleetqd answered ok: true; otherwise "<prog>: ..." was printed on
 * stderr and nothing is left to free: FQ_CLI_ASK_UNREACHABLE when no
 * answer came in time (ZeroMQ connects in the background: a daemon that is
 * not there is a request that times out), FQ_CLI_ASK_FAILED for anything
 * else (a refusal, a bad reply, no memory). */
enum { FQ_CLI_ASK_OK = 0, FQ_CLI_ASK_FAILED = 1, FQ_CLI_ASK_UNREACHABLE = 2 };
struct fq_buf;
struct fq_msg;
int fq_cli_ask(const char *prog, const struct fq_client_opts *o, const struct fq_buf *req,
               struct fq_buf *raw, struct fq_msg *m);

/* The option ids a one-request subcommand (health, usage) gives the
 * options every such subcommand has; its own ones start at
 * FQ_CLI_O_OWN. */
enum {
  FQ_CLI_O_HELP = 1000, FQ_CLI_O_VERSION, FQ_CLI_O_ENDPOINT, FQ_CLI_O_JSON, FQ_CLI_O_TIMEOUT,
  FQ_CLI_O_CURVE_KEY, FQ_CLI_O_SERVER_KEY, FQ_CLI_O_OWN
};

/* A one-request subcommand's option table: FQ_CLI_REQUEST_OPTS_HEAD, its
 * own entries, FQ_CLI_REQUEST_OPTS_TAIL (which ends the table), so that
 * their --help lists the shared options alike. */
#define FQ_CLI_REQUEST_OPTS_HEAD                                               \
  FQ_OPT_HELP(FQ_CLI_O_HELP), FQ_OPT_VERSION(FQ_CLI_O_VERSION),                \
      FQ_CLI_OPT_ENDPOINT(FQ_CLI_O_ENDPOINT)
#define FQ_CLI_REQUEST_OPTS_TAIL                                               \
  {"json", 0, NULL, FQ_CLI_O_JSON, "print the daemon's reply as one JSON object"}, \
      FQ_CLI_OPT_TIMEOUT(FQ_CLI_O_TIMEOUT,                                     \
                         "wait at most S seconds for the answer (default 5)"),  \
      FQ_CLI_OPT_CURVE(FQ_CLI_O_CURVE_KEY, FQ_CLI_O_SERVER_KEY), {NULL, 0, NULL, 0, NULL}

/* A one-request subcommand's own option: 0 when taken, -1 when id is not
 * one it knows, else the exit status after printing why
 * (fq_opt_usage_error). */
typedef int (*fq_cli_own_opt_fn)(void *ctx, const char *prog, int id, const char *value);

/* Parse a one-request subcommand's options (table opts, --help from doc)
 * into co and *json: --endpoint (default FQ_CLI_DEFAULT_ENDPOINT),
 * --timeout (default 5 s), --json, --curve-key / --server-key, -h and
 * --version here; any other id of the table goes to own(ctx, ...).  Then
 * no positional argument, and fq_cli_conn_finish.  -1 when the request
 * can go, else the exit status (0 after --help / --version, 2 a usage
 * error, printed). */
int fq_cli_request_opts(const char *cmd, const fq_opt_t *opts, const fq_cli_doc_t *doc, int argc,
                        char **argv, struct fq_client_opts *co, bool *json, fq_cli_own_opt_fn own,
                        void *ctx);

/* --json: the reply (msgpack in raw) as one line of JSON on stdout. */
void fq_cli_print_json(const struct fq_buf *raw);

/* A time as unix ms: decimal unix milliseconds (1795920000000) or
 * ISO-8601 / RFC 3339 (2026-11-29T03:00:00Z, 2026-11-29T03:00:00.250+01:00,
 * 2026-11-29; no offset: UTC).  False when malformed. */
bool fq_cli_parse_time(const char *s, int64_t *ms);
/* The same, or a time relative to now_ms: "+" then a count and one unit
 * of ms, s, m, h or d ("+30s", "+5m", "+2h"), at most a year. */
bool fq_cli_parse_when(const char *s, int64_t now_ms, int64_t *ms);

/* ------------------------------------------------------------------ */
/* Long-running subcommands (send --wait, watch, campaign watch)       */

/* Set by SIGINT / SIGTERM once fq_cli_catch_stop() ran. */
extern volatile sig_atomic_t fq_cli_stop;

/* SIGINT / SIGTERM set fq_cli_stop.  No SA_RESTART, so a blocking poll
 * returns EINTR and the loop around it ends cleanly. */
void fq_cli_catch_stop(void);

/* ------------------------------------------------------------------ */
/* Readable output                                                      */

/* Unix ms as "2026-11-29T03:00:00.250Z"; "-" for 0 or less. */
void fq_cli_fmt_time(int64_t ms, char *out, size_t cap);

/* One value of a reply, without a newline: a string as it is, nil as "-",
 * a float with %g, an integer as a UTC time (fq_cli_fmt_time) when
 * as_time and it is positive, else as a number; maps and arrays (params)
 * as compact JSON. */
struct msgpack_object;
void fq_cli_print_value(const struct msgpack_object *v, bool as_time);

/* A command state with no way out: succeeded, failed, unknown, expired,
 * cancelled, superseded. */
bool fq_cli_is_terminal(const char *s, size_t n);

#endif
