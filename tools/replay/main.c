/*
 * fleetq-replay: load testing with fleetq traffic files
 * (proto/traffic-format.md).  `gen` writes synthetic traffic, `run` plays
 * a file against a fleetqd on this host, open loop, and reports what it
 * measured.  This file holds the subcommand dispatch only; gen.c and run.c
 * share the option helpers of opts.c.
 */
#include <stdio.h>
#include <string.h>

#include "cliopt.h"
#include "replay.h"

static const char g_usage[] =
    "usage: fleetq-replay <command> [options]\n"
    "       fleetq-replay --version\n"
    "\n"
    "  gen   write a synthetic traffic file (devices, command mix, Zipf or\n"
    "        uniform device choice, bursts, duplicates, energy share)\n"
    "  run   replay a traffic file against a fleetqd on this host, open loop,\n"
    "        and report rate, errors, ack and end-to-end latency\n"
    "\n"
    "'fleetq-replay <command> --help' describes each; both take --opt value and\n"
    "--opt=value, -h / --help, --version and --json.  Traffic files are\n"
    "described in proto/traffic-format.md; `fleetq export` writes them from a\n"
    "daemon's history.\n"
    "\n"
    "Exit status: 0 success, 1 failure, 2 usage error.\n";

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
      !strcmp(argv[1], "help")) {
    fputs(g_usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "--version")) return fq_opt_version("fleetq-replay");
  if (!strcmp(argv[1], "gen")) return fq_replay_gen(argc - 1, argv + 1);
  if (!strcmp(argv[1], "run")) return fq_replay_run(argc - 1, argv + 1);
  if (argv[1][0] == '-') {
    size_t n = strcspn(argv[1], "=");
    return fq_opt_usage_error("fleetq-replay", "unknown option '%.*s' before the command",
                              (int)n, argv[1]);
  }
  return fq_opt_usage_error("fleetq-replay", "unknown command '%s' (gen, run)", argv[1]);
}
