/*
 * The fleetq CLI: every subcommand lives in its own tools/fleetq/cmd_*.c
 * file and registers itself at load time with FQ_CLI_COMMAND, so files can
 * be added without touching main.c.
 */
#ifndef FQ_CLI_H
#define FQ_CLI_H

/* A subcommand's entry point: argv[0] is the subcommand name.  Returns the
 * process exit status (0 ok, 1 the request failed, 2 usage error). */
typedef int (*fq_cli_fn)(int argc, char **argv);

void fq_cli_register(const char *name, fq_cli_fn fn, const char *summary);

#define FQ_CLI_COMMAND(name, fn, summary)                                      \
  __attribute__((constructor)) static void fq_cli_reg_##fn(void) {             \
    fq_cli_register(name, fn, summary);                                        \
  }

/* Default daemon endpoint for --endpoint. */
#define FQ_CLI_DEFAULT_ENDPOINT "tcp://127.0.0.1:5555"
#define FQ_CLI_DEFAULT_PUBLISH "tcp://127.0.0.1:5556"

/* ------------------------------------------------------------------ */
/* CURVE options, the same in every subcommand that connects (conn.c)  */

struct fq_client_opts;

/* The two getopt_long entries; key_id / server_id are the subcommand's
 * own option codes. */
#define FQ_CLI_CURVE_LONGOPTS(key_id, server_id)                               \
  {"curve-key", required_argument, NULL, (key_id)},                            \
      {"server-key", required_argument, NULL, (server_id)}

/* Printed after a connecting subcommand's --help. */
#define FQ_CLI_CURVE_HELP                                                      \
  "\n"                                                                         \
  "Authentication (when fleetqd runs with --curve-secret):\n"                  \
  "  --curve-key FILE   this client's CURVE key pair file (fleetq curve-keygen;\n" \
  "                     mode 0600); default $FLEETQ_CURVE_KEY\n"                \
  "  --server-key Z85   fleetqd's CURVE public key (40 characters); default\n"  \
  "                     $FLEETQ_SERVER_KEY\n"                                   \
  "  Give both, or neither for a plaintext fleetqd on this host.  A flag wins\n" \
  "  over its variable.  A refused key fails at once (exit 1, auth_error).\n"

/* Complete the connection options of subcommand cmd after parsing: the
 * CURVE settings the flags left unset come from FLEETQ_CURVE_KEY /
 * FLEETQ_SERVER_KEY, then both-or-neither, the server key and the key
 * file are checked (fq_client_opts_resolve).  Returns -1 when fine, or 2
 * after printing "fleetq <cmd>: <why>" (a usage error). */
int fq_cli_conn_resolve(const char *cmd, struct fq_client_opts *o);

#endif
