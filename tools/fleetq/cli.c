/*
 * What the fleetq subcommands share (cli.h): the layout of their --help
 * around the option list their table prints, and the connection options
 * (CURVE keys from --curve-key / --server-key or the environment, checked
 * once after parsing so that a wrong or half setup is a usage error naming
 * the flag, not a timeout).
 */
#include <stdio.h>

#include "cli.h"
#include "fleetq/client.h"

void fq_cli_help(FILE *f, const fq_cli_doc_t *doc, const fq_opt_t *opts) {
  fprintf(f, "usage: %s\n", doc->usage);
  if (doc->about) fprintf(f, "\n%s", doc->about);
  fprintf(f, "\nOptions:\n");
  fq_opt_print(f, opts);
  if (doc->notes) fprintf(f, "\n%s", doc->notes);
  if (doc->exit) fprintf(f, "\nExit status: %s\n", doc->exit);
}

int fq_cli_conn_resolve(const char *cmd, fq_client_opts_t *o) {
  fq_err_t e;
  fq_err_clear(&e);
  if (fq_client_opts_resolve(o, &e) == 0) return -1;
  fprintf(stderr, "fleetq %s: %s\n", cmd, e.msg);
  return 2;
}
