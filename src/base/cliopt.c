/*
 * Command-line options from one table (cliopt.h): the table becomes
 * getopt_long's `struct option` array and short-option string, and the
 * --help option list.  Long names are checked for an exact match before
 * getopt_long sees them, because getopt_long would take any unambiguous
 * prefix and say only "unrecognized" for the rest.
 */
#include "cliopt.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* The column option descriptions start at in fq_opt_print. */
#define HELP_COL 26

static const fq_opt_t *find_long(const fq_opt_t *opts, const char *name, size_t n) {
  for (const fq_opt_t *o = opts; o->name; o++)
    if (strlen(o->name) == n && memcmp(o->name, name, n) == 0) return o;
  return NULL;
}

static const fq_opt_t *find_id(const fq_opt_t *opts, int id) {
  for (const fq_opt_t *o = opts; o->name; o++)
    if (o->id == id) return o;
  return NULL;
}

static const fq_opt_t *find_short(const fq_opt_t *opts, int c) {
  for (const fq_opt_t *o = opts; o->name; o++)
    if (o->shortc && o->shortc == c) return o;
  return NULL;
}

void fq_opt_init(fq_opt_parser_t *p, const char *prog, const fq_opt_t *opts, int argc,
                 char **argv) {
  memset(p, 0, sizeof *p);
  p->prog = prog;
  p->opts = opts;
  p->argc = argc;
  p->argv = argv;
  p->next = argc;
  /* ':' first: a missing value returns ':' instead of '?'. */
  size_t k = 0, s = 0;
  p->shorts[s++] = ':';
  for (const fq_opt_t *o = opts; o->name; o++, k++) {
    if (k == FQ_OPT_MAX || o->id < 256 || !o->name[0]) {
      /* A table that cannot work is a bug in the program, not input. */
      fprintf(stderr, "%s: option table: entry %zu (%s) is invalid or beyond %d\n", prog, k,
              o->name, FQ_OPT_MAX);
      abort();
    }
    p->lo[k] = (struct option){o->name, o->arg ? required_argument : no_argument, NULL, o->id};
    if (o->shortc) {
      p->shorts[s++] = (char)o->shortc;
      if (o->arg) p->shorts[s++] = ':';
    }
  }
  p->lo[k] = (struct option){NULL, 0, NULL, 0};
  p->shorts[s] = 0;
  optind = 0; /* glibc: a full re-initialisation, for the next subcommand too */
  opterr = 0;
}

/* Every "--name[=value]" before "--" must name an option exactly; the
 * value of an option that takes one (next argument) is skipped.  Returns
 * 0 or FQ_OPT_ERROR after printing the first bad one. */
static int check_names(fq_opt_parser_t *p) {
  for (int i = 1; i < p->argc; i++) {
    const char *a = p->argv[i];
    if (strcmp(a, "--") == 0) break;
    if (strncmp(a, "--", 2) != 0) {
      /* A short option taking a value consumes the next argument too. */
      if (a[0] == '-' && a[1] && !a[2]) {
        const fq_opt_t *o = find_short(p->opts, a[1]);
        if (o && o->arg) i++;
      }
      continue;
    }
    const char *eq = strchr(a + 2, '=');
    size_t n = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
    const fq_opt_t *o = find_long(p->opts, a + 2, n);
    if (!o) {
      fq_opt_usage_error(p->prog, "unknown option '--%.*s'", (int)n, a + 2);
      return FQ_OPT_ERROR;
    }
    if (o->arg && !eq) i++;
  }
  return 0;
}

int fq_opt_next(fq_opt_parser_t *p) {
  if (!p->checked) {
    p->checked = true;
    if (check_names(p)) return FQ_OPT_ERROR;
  }
  p->value = NULL;
  p->opt = NULL;
  int c = getopt_long(p->argc, p->argv, p->shorts, p->lo, NULL);
  if (c == -1) {
    p->next = optind;
    return FQ_OPT_END;
  }
  const char *tok = optind > 0 && optind <= p->argc ? p->argv[optind - 1] : "?";
  if (c == ':') {
    /* optopt: the id of a long option, the letter of a short one. */
    const fq_opt_t *o = optopt < 256 ? find_short(p->opts, optopt) : find_id(p->opts, optopt);
    if (o && optopt < 256)
      fq_opt_usage_error(p->prog, "option -%c needs a value (%s)", optopt, o->arg);
    else if (o)
      fq_opt_usage_error(p->prog, "option --%s needs a value (%s)", o->name, o->arg);
    else
      fq_opt_usage_error(p->prog, "option '%s' needs a value", tok);
    return FQ_OPT_ERROR;
  }
  if (c == '?') {
    const fq_opt_t *o = optopt >= 256 ? find_id(p->opts, optopt) : NULL;
    if (o && !o->arg)
      fq_opt_usage_error(p->prog, "option --%s takes no value", o->name);
    else if (optopt && optopt < 256)
      fq_opt_usage_error(p->prog, "unknown option '-%c'", optopt);
    else
      fq_opt_usage_error(p->prog, "unknown option '%s'", tok);
    return FQ_OPT_ERROR;
  }
  const fq_opt_t *o = c < 256 ? find_short(p->opts, c) : find_id(p->opts, c);
  if (!o) {
    fq_opt_usage_error(p->prog, "unknown option '%s'", tok);
    return FQ_OPT_ERROR;
  }
  p->opt = o;
  p->value = o->arg ? optarg : NULL;
  return o->id;
}

void fq_opt_print(FILE *f, const fq_opt_t *opts) {
  for (const fq_opt_t *o = opts; o->name; o++) {
    if (!o->help) continue;
    char left[128];
    int n;
    if (o->shortc)
      n = snprintf(left, sizeof left, "  -%c, --%s%s%s", o->shortc, o->name, o->arg ? " " : "",
                   o->arg ? o->arg : "");
    else
      n = snprintf(left, sizeof left, "      --%s%s%s", o->name, o->arg ? " " : "",
                   o->arg ? o->arg : "");
    fputs(left, f);
    /* Too wide for the column: the description starts on the next line. */
    int col = n;
    if (n >= HELP_COL - 1) {
      fputc('\n', f);
      col = 0;
    }
    fprintf(f, "%*s", HELP_COL - col, "");
    for (const char *h = o->help; *h; h++) {
      fputc(*h, f);
      if (*h == '\n' && h[1]) fprintf(f, "%*s", HELP_COL, "");
    }
    fputc('\n', f);
  }
}

int fq_opt_usage_error(const char *prog, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: ", prog);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, " (see '%s --help')\n", prog);
  return 2;
}

int fq_opt_fail(const char *prog, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: ", prog);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  return 1;
}

int fq_opt_version(const char *prog) {
  size_t n = strcspn(prog, " ");
  printf("%.*s %s\n", (int)n, prog, FQ_VERSION);
  return fflush(stdout) == 0 ? 0 : 1;
}
