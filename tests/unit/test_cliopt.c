/*
 * Unit tests of cliopt.c, the option tables of fleetq, fleetq-replay and
 * fleetsim: --opt value and --opt=value, -h, positional arguments mixed
 * in and after "--", every kind of usage error with its message, names
 * that must be spelled out, and the --help list printed from the table.
 */
#include <stdlib.h>
#include <unistd.h>

#include "cliopt.h"
#include "fq_test.h"

enum { O_HELP = 256, O_VERSION, O_ENDPOINT, O_JSON, O_COUNT, O_TIMEOUT, O_SECRET };

static const fq_opt_t g_opts[] = {
    FQ_OPT_HELP(O_HELP),
    FQ_OPT_VERSION(O_VERSION),
    {"endpoint", 0, "EP", O_ENDPOINT, "the daemon's request endpoint"},
    {"json", 0, NULL, O_JSON, "print JSON"},
    {"count", 'n', "N", O_COUNT, "stop after N events\nthen exit 0"},
    {"timeout", 0, "S", O_TIMEOUT, "give up after S seconds"},
    {"secret", 0, "X", O_SECRET, NULL},
    {NULL, 0, NULL, 0, NULL},
};

/* Run the parser over a NULL-terminated argument list; the results go to
 * out as "id=value" words, positional arguments as "+arg", the end as
 * "END" or "ERROR", and stderr is captured into err. */
static void parse(char **args, char *out, size_t cap, char *err, size_t ecap) {
  int argc = 0;
  while (args[argc]) argc++;
  char *argv[32];
  for (int i = 0; i < argc; i++) argv[i] = args[i];
  argv[argc] = NULL;
  fflush(stderr);
  int saved = dup(2);
  FILE *tmp = tmpfile();
  dup2(fileno(tmp), 2);
  fq_opt_parser_t p;
  fq_opt_init(&p, "prog sub", g_opts, argc, argv);
  size_t k = 0;
  out[0] = 0;
  for (;;) {
    int id = fq_opt_next(&p);
    if (id == FQ_OPT_END) {
      for (int i = p.next; i < argc; i++) k += (size_t)snprintf(out + k, cap - k, "+%s ", argv[i]);
      snprintf(out + k, cap - k, "END");
      break;
    }
    if (id == FQ_OPT_ERROR) {
      snprintf(out + k, cap - k, "ERROR");
      break;
    }
    k += (size_t)snprintf(out + k, cap - k, "%d=%s ", id - 256, p.value ? p.value : "-");
  }
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  rewind(tmp);
  size_t n = fread(err, 1, ecap - 1, tmp);
  err[n] = 0;
  fclose(tmp);
}

#define PARSE(...)                                                      \
  do {                                                                  \
    char *args_[] = {"sub", __VA_ARGS__, NULL};                         \
    parse(args_, out, sizeof out, err, sizeof err);                     \
  } while (0)

FQ_TEST(values_both_forms) {
  char out[512], err[512];
  PARSE("--endpoint", "tcp://a:1", "--timeout=2.5", "--json", "-n", "3", "--count=4");
  CHECK_STR(out, "2=tcp://a:1 5=2.5 3=- 4=3 4=4 END");
  CHECK_STR(err, "");
  /* A value may itself start with dashes or hold '='. */
  PARSE("--endpoint", "--json", "--timeout=a=b");
  CHECK_STR(out, "2=--json 5=a=b END");
  CHECK_STR(err, "");
  PARSE("-n5");
  CHECK_STR(out, "4=5 END");
}

FQ_TEST(help_and_positional) {
  char out[512], err[512];
  PARSE("-h");
  CHECK_STR(out, "0=- END");
  PARSE("--help");
  CHECK_STR(out, "0=- END");
  PARSE("--version");
  CHECK_STR(out, "1=- END");
  /* Options and positional arguments mix; "--" ends the options. */
  PARSE("FILE", "--json", "two");
  CHECK_STR(out, "3=- +FILE +two END");
  PARSE("--json", "--", "--count", "-");
  CHECK_STR(out, "3=- +--count +- END");
  /* Hidden entries parse like any other. */
  PARSE("--secret", "x");
  CHECK_STR(out, "6=x END");
}

FQ_TEST(usage_errors_name_the_option) {
  char out[512], err[512];
  PARSE("--bogus");
  CHECK_STR(out, "ERROR");
  CHECK_STR(err, "prog sub: unknown option '--bogus' (see 'prog sub --help')\n");
  PARSE("--bogus=1");
  CHECK_STR(err, "prog sub: unknown option '--bogus' (see 'prog sub --help')\n");
  /* Abbreviations getopt_long would take are refused: --end, --js. */
  PARSE("--end", "x");
  CHECK_STR(out, "ERROR");
  CHECK_STR(err, "prog sub: unknown option '--end' (see 'prog sub --help')\n");
  PARSE("--js");
  CHECK_STR(out, "ERROR");
  /* Checked before anything is returned: nothing half-parsed acts. */
  PARSE("--json", "--jsn");
  CHECK_STR(out, "ERROR");
  PARSE("-x");
  CHECK_STR(err, "prog sub: unknown option '-x' (see 'prog sub --help')\n");
  PARSE("--endpoint");
  CHECK_STR(out, "ERROR");
  CHECK_STR(err, "prog sub: option --endpoint needs a value (EP) (see 'prog sub --help')\n");
  PARSE("--json", "-n");
  CHECK_STR(out, "3=- ERROR");
  CHECK_STR(err, "prog sub: option -n needs a value (N) (see 'prog sub --help')\n");
  PARSE("--json=yes");
  CHECK_STR(out, "ERROR");
  CHECK_STR(err, "prog sub: option --json takes no value (see 'prog sub --help')\n");
}

FQ_TEST(the_parser_can_be_used_again) {
  char out[512], err[512];
  PARSE("--bogus");
  PARSE("--json", "x");
  CHECK_STR(out, "3=- +x END");
  PARSE("--count", "1");
  CHECK_STR(out, "4=1 END");
}

FQ_TEST(help_list_from_the_table) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  fq_opt_print(f, g_opts);
  fclose(f);
  CHECK_STR(buf,
            "  -h, --help              show this help and exit\n"
            "      --version           print the version and exit\n"
            "      --endpoint EP       the daemon's request endpoint\n"
            "      --json              print JSON\n"
            "  -n, --count N           stop after N events\n"
            "                          then exit 0\n"
            "      --timeout S         give up after S seconds\n");
  free(buf);
  static const fq_opt_t wide[] = {
      {"a-very-long-option-name", 0, "VALUE", 300, "described below"},
      {NULL, 0, NULL, 0, NULL},
  };
  buf = NULL;
  f = open_memstream(&buf, &len);
  fq_opt_print(f, wide);
  fclose(f);
  CHECK_STR(buf, "      --a-very-long-option-name VALUE\n"
                 "                          described below\n");
  free(buf);
}
