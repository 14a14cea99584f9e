/*
 * The connection options every fleetq subcommand that talks to fleetqd
 * shares (cli.h): CURVE keys from --curve-key / --server-key or the
 * environment, checked once after parsing so that a wrong or half setup
 * is a usage error naming the flag, not a timeout.
 */
#include <stdio.h>

#include "cli.h"
#include "fleetq/client.h"

int fq_cli_conn_resolve(const char *cmd, fq_client_opts_t *o) {
  fq_err_t e;
  fq_err_clear(&e);
  if (fq_client_opts_resolve(o, &e) == 0) return -1;
  fprintf(stderr, "fleetq %s: %s\n", cmd, e.msg);
  return 2;
}
