/*
 * fleetq: the command-line client of fleetqd.  This file only dispatches:
 * each subcommand lives in a tools/fleetq/cmd_*.c file and registers itself
 * with FQ_CLI_COMMAND (cli.h) before main() runs.
 *
 * Exit status: 0 success, 1 the request failed (daemon error, timeout),
 * 2 usage error (unknown subcommand, bad option).  The convention every
 * subcommand follows is in cli.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define FQ_CLI_MAX_COMMANDS 64

typedef struct cli_entry {
  const char *name;
  fq_cli_fn fn;
  const char *summary;
} cli_entry_t;

/* Filled by constructors before main(), read-only afterwards. */
static cli_entry_t g_cmds[FQ_CLI_MAX_COMMANDS];
static size_t g_ncmds;

void fq_cli_register(const char *name, fq_cli_fn fn, const char *summary) {
  if (g_ncmds == FQ_CLI_MAX_COMMANDS) {
    /* A programming error in the build, not a runtime condition. */
    fprintf(stderr, "fleetq: too many subcommands (raise FQ_CLI_MAX_COMMANDS)\n");
    abort();
  }
  g_cmds[g_ncmds].name = name;
  g_cmds[g_ncmds].fn = fn;
  g_cmds[g_ncmds].summary = summary;
  g_ncmds++;
}

static int cmp_entry(const void *a, const void *b) {
  return strcmp(((const cli_entry_t *)a)->name, ((const cli_entry_t *)b)->name);
}

static const cli_entry_t *find_cmd(const char *name) {
  for (size_t i = 0; i < g_ncmds; i++)
    if (strcmp(g_cmds[i].name, name) == 0) return &g_cmds[i];
  return NULL;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: fleetq <command> [options]\n"
          "       fleetq help <command>   (or: fleetq <command> --help)\n"
          "       fleetq --version\n"
          "\n"
          "commands:\n");
  for (size_t i = 0; i < g_ncmds; i++)
    fprintf(f, "  %-13s %s\n", g_cmds[i].name, g_cmds[i].summary ? g_cmds[i].summary : "");
  fprintf(f,
          "\n"
          "Every command takes -h / --help, --version, and its options as --opt value\n"
          "or --opt=value; the ones that print results take --json.  Errors go to\n"
          "stderr as 'fleetq <command>: ...'.\n"
          "\n"
          "The daemon's request endpoint defaults to %s, its status\n"
          "publisher to %s.  For a fleetqd with CURVE, the commands\n"
          "that connect take --curve-key FILE --server-key Z85 (defaults:\n"
          "$FLEETQ_CURVE_KEY, $FLEETQ_SERVER_KEY); make a key with curve-keygen.\n"
          "\n"
          "Exit status: 0 success, 1 failure (the daemon refused or did not answer,\n"
          "a file could not be written, ...), 2 usage error; each command's --help\n"
          "says what they mean for it.\n",
          FQ_CLI_DEFAULT_ENDPOINT, FQ_CLI_DEFAULT_PUBLISH);
}

static int unknown(const char *name) {
  return fq_opt_usage_error("fleetq", "unknown command '%s'", name);
}

int main(int argc, char **argv) {
  qsort(g_cmds, g_ncmds, sizeof g_cmds[0], cmp_entry);
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *name = argv[1];
  /* The program's own options come before the command: only these two,
   * so no parser (a table parser would take the command's options). */
  if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(name, "--version") == 0) return fq_opt_version("fleetq");
  if (strcmp(name, "help") == 0) {
    if (argc < 3) {
      usage(stdout);
      return 0;
    }
    const cli_entry_t *e = find_cmd(argv[2]);
    if (!e) return unknown(argv[2]);
    char *hargv[] = {(char *)e->name, (char *)"--help", NULL};
    return e->fn(2, hargv);
  }
  if (name[0] == '-') {
    size_t n = strcspn(name, "=");
    return fq_opt_usage_error("fleetq", "unknown option '%.*s' before the command", (int)n,
                              name);
  }
  const cli_entry_t *e = find_cmd(name);
  if (!e) return unknown(name);
  return e->fn(argc - 1, argv + 1);
}
