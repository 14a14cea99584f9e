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

#endif
