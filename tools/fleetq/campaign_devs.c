/*
 * Device lists of `fleetq campaign start` (campaign_devs.h): CSV and JSON
 * readers that say which line is wrong and why, the duplicate check, and
 * the split into request parts below fleetqd's body limit.
 */
#include "campaign_devs.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <msgpack.h>

#include "mpbuf.h"

/* ------------------------------------------------------------------ */
/* One device                                                           */

static bool vin_char(char c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z' && c != 'I' && c != 'O' && c != 'Q');
}

/* A printable excerpt of a field for messages: at most 40 bytes, control
 * characters as '?', so that a binary file cannot garble the terminal. */
static void excerpt(const char *p, size_t n, char *out, size_t cap) {
  size_t k = 0;
  for (size_t i = 0; i < n && i < 40 && k + 1 < cap; i++)
    out[k++] = (unsigned char)p[i] < 0x20 || p[i] == 0x7f ? '?' : p[i];
  if (n > 40 && k + 4 < cap) {
    memcpy(out + k, "...", 3);
    k += 3;
  }
  out[k] = 0;
}

static int set_vin(fq_camp_dev_t *d, const char *p, size_t n, const char *name, uint32_t line,
                   fq_err_t *err) {
  char q[64];
  excerpt(p, n, q, sizeof q);
  if (n != 17)
    return fq_errf(err, FQ_EBADPARAM, "%s:%" PRIu32 ": bad VIN '%s': %zu characters, a VIN has 17",
                   name, line, q, n);
  for (size_t i = 0; i < 17; i++) {
    char c = (char)toupper((unsigned char)p[i]);
    if (!vin_char(c))
      return fq_errf(err, FQ_EBADPARAM,
                     "%s:%" PRIu32 ": bad VIN '%s': character %zu is not one of A-H J-N P R-Z "
                     "0-9 (never I, O or Q)",
                     name, line, q, i + 1);
    d->vin[i] = c;
  }
  d->vin[17] = 0;
  return 0;
}

static int set_site(fq_camp_dev_t *d, const char *p, size_t n, const char *name, uint32_t line,
                    fq_err_t *err) {
  char q[64];
  excerpt(p, n, q, sizeof q);
  uint64_t v = 0;
  bool ok = n > 0 && n <= 20;
  for (size_t i = 0; ok && i < n; i++) {
    unsigned dg = (unsigned)(p[i] - '0');
    if (dg > 9 || v > (UINT64_MAX - dg) / 10) ok = false;
    else v = v * 10 + dg;
  }
  if (!ok || v == 0)
    return fq_errf(err, FQ_EBADPARAM,
                   "%s:%" PRIu32 ": bad site '%s': an energy site id is a positive integer", name,
                   line, q);
  d->site = v;
  return 0;
}

static int set_account(fq_camp_dev_t *d, const char *p, size_t n, const char *dflt,
                       const char *name, uint32_t line, fq_err_t *err) {
  if (n == 0 && dflt) {
    p = dflt;
    n = strlen(dflt);
  }
  if (n == 0)
    return fq_errf(err, FQ_EBADPARAM,
                   "%s:%" PRIu32 ": missing account (give an account column or key, or "
                   "--account for a default)",
                   name, line);
  char q[64];
  excerpt(p, n, q, sizeof q);
  if (n > FQ_CAMP_MAX_ACCOUNT)
    return fq_errf(err, FQ_EBADPARAM, "%s:%" PRIu32 ": account '%s' is longer than %d bytes",
                   name, line, q, FQ_CAMP_MAX_ACCOUNT);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
      return fq_errf(err, FQ_EBADPARAM, "%s:%" PRIu32 ": account '%s' has a control character",
                     name, line, q);
  memcpy(d->account, p, n);
  d->account[n] = 0;
  return 0;
}

static fq_camp_dev_t *push(fq_camp_devs_t *out, const char *name, fq_err_t *err) {
  if (out->n >= FQ_CAMP_MAX_DEVICES) {
    fq_errf(err, FQ_EBADPARAM,
            "%s: more than %d devices; a campaign takes at most %d (split the list into "
            "several campaigns)",
            name, FQ_CAMP_MAX_DEVICES, FQ_CAMP_MAX_DEVICES);
    return NULL;
  }
  if (out->n == out->cap) {
    size_t cap = out->cap ? out->cap * 2 : 1024;
    fq_camp_dev_t *v = realloc(out->v, cap * sizeof *v);
    if (!v) {
      fq_errf(err, -ENOMEM, "%s: out of memory", name);
      return NULL;
    }
    out->v = v;
    out->cap = cap;
  }
  fq_camp_dev_t *d = &out->v[out->n++];
  memset(d, 0, sizeof *d);
  return d;
}

/* Fill a device from its raw vin / site / account texts (vin or site
 * NULL when the row has no such field). */
static int fill_dev(fq_camp_devs_t *out, const char *vin, size_t vn, const char *site, size_t sn,
                    const char *acct, size_t an, const char *dflt, const char *name,
                    uint32_t line, fq_err_t *err) {
  bool hv = vin && vn, hs = site && sn;
  if (hv && hs)
    return fq_errf(err, FQ_EBADPARAM, "%s:%" PRIu32 ": both vin and site; give one per device",
                   name, line);
  if (!hv && !hs)
    return fq_errf(err, FQ_EBADPARAM, "%s:%" PRIu32 ": no vin or site", name, line);
  fq_camp_dev_t *d = push(out, name, err);
  if (!d) return err->code;
  d->line = line;
  int rc = hv ? set_vin(d, vin, vn, name, line, err) : set_site(d, site, sn, name, line, err);
  if (!rc) rc = set_account(d, acct, acct ? an : 0, dflt, name, line, err);
  return rc;
}

/* ------------------------------------------------------------------ */
/* CSV                                                                  */

#define CSV_MAX_COLS 64

typedef struct csv_field {
  const char *p;
  size_t n;
  char *own; /* an unquoted copy when the field was quoted with "" inside */
} csv_field_t;

static void trim(const char **p, size_t *n) {
  while (*n && (**p == ' ' || **p == '\t')) (*p)++, (*n)--;
  while (*n && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t')) (*n)--;
}

/* Split one line (no newline) into fields.  Returns the field count, or
 * -1 with err set (an unterminated quote, too many columns). */
static int csv_split(const char *s, size_t n, csv_field_t *f, const char *name, uint32_t line,
                     fq_err_t *err) {
  int nf = 0;
  size_t i = 0;
  for (;;) {
    if (nf == CSV_MAX_COLS) {
      fq_errf(err, FQ_EBADPARAM, "%s:%" PRIu32 ": more than %d columns", name, line,
              CSV_MAX_COLS);
      return -1;
    }
    csv_field_t *x = &f[nf++];
    memset(x, 0, sizeof *x);
    while (i < n && (s[i] == ' ' || s[i] == '\t')) i++;
    if (i < n && s[i] == '"') {
      size_t start = ++i, quotes = 0;
      for (;;) {
        if (i >= n) {
          fq_errf(err, FQ_EBADPARAM, "%s:%" PRIu32 ": unterminated quote in column %d", name,
                  line, nf);
          return -1;
        }
        if (s[i] == '"') {
          if (i + 1 < n && s[i + 1] == '"') {
            quotes++;
            i += 2;
            continue;
          }
          break;
        }
        i++;
      }
      x->p = s + start;
      x->n = i - start;
      if (quotes) {
        /* "" stands for one quote: copy without the doubles. */
        x->own = malloc(x->n);
        if (!x->own) {
          fq_errf(err, -ENOMEM, "%s: out of memory", name);
          return -1;
        }
        size_t k = 0;
        for (size_t j = 0; j < x->n; j++) {
          x->own[k++] = x->p[j];
          if (x->p[j] == '"') j++;
        }
        x->p = x->own;
        x->n = k;
      }
      i++; /* the closing quote */
      while (i < n && (s[i] == ' ' || s[i] == '\t')) i++;
      if (i < n && s[i] != ',') {
        fq_errf(err, FQ_EBADPARAM, "%s:%" PRIu32 ": text after the closing quote of column %d",
                name, line, nf);
        return -1;
      }
    } else {
      size_t start = i;
      while (i < n && s[i] != ',') i++;
      x->p = s + start;
      x->n = i - start;
      trim(&x->p, &x->n);
    }
    if (i >= n) return nf;
    i++; /* the comma */
  }
}

static void csv_free(csv_field_t *f, int nf) {
  for (int i = 0; i < nf; i++) free(f[i].own);
}

static bool field_is(const csv_field_t *f, const char *want) {
  size_t n = strlen(want);
  if (f->n != n) return false;
  for (size_t i = 0; i < n; i++)
    if (tolower((unsigned char)f->p[i]) != want[i]) return false;
  return true;
}

static int parse_csv(const char *text, size_t len, const char *dflt, const char *name,
                     fq_camp_devs_t *out, fq_err_t *err) {
  csv_field_t *f = calloc(CSV_MAX_COLS, sizeof *f);
  if (!f) return fq_errf(err, -ENOMEM, "%s: out of memory", name);
  int col_vin = -1, col_site = -1, col_acct = -1, rc = 0;
  bool header = false;
  uint32_t line = 0;
  size_t pos = 0;
  while (pos < len && !rc) {
    const char *s = text + pos;
    const char *nl = memchr(s, '\n', len - pos);
    size_t n = nl ? (size_t)(nl - s) : len - pos;
    pos += n + (nl ? 1 : 0);
    line++;
    if (n && s[n - 1] == '\r') n--;
    size_t k = 0;
    while (k < n && (s[k] == ' ' || s[k] == '\t')) k++;
    if (k == n) continue; /* blank line */
    if (memchr(s, 0, n)) {
      rc = fq_errf(err, FQ_EBADPARAM, "%s:%" PRIu32 ": a NUL byte: not a text file", name, line);
      break;
    }
    int nf = csv_split(s, n, f, name, line, err);
    if (nf < 0) {
      rc = err->code;
      break;
    }
    if (!header) {
      header = true;
      for (int i = 0; i < nf; i++) {
        int *slot = field_is(&f[i], "vin") ? &col_vin
                    : field_is(&f[i], "site") ? &col_site
                    : field_is(&f[i], "account") ? &col_acct : NULL;
        if (slot && *slot >= 0) {
          char q[64];
          excerpt(f[i].p, f[i].n, q, sizeof q);
          rc = fq_errf(err, FQ_EBADPARAM, "%s:%" PRIu32 ": column '%s' named twice", name, line,
                       q);
        } else if (slot) {
          *slot = i;
        }
      }
      if (!rc && col_vin < 0 && col_site < 0) {
        char q[64];
        excerpt(s, n, q, sizeof q);
        rc = fq_errf(err, FQ_EBADPARAM,
                     "%s:%" PRIu32 ": the header line names no 'vin' or 'site' column (got "
                     "'%s'); the first line must name the columns, e.g. vin,account",
                     name, line, q);
      }
      if (!rc && col_acct < 0 && !dflt)
        rc = fq_errf(err, FQ_EBADPARAM,
                     "%s:%" PRIu32 ": no 'account' column and no --account default", name, line);
    } else {
      const csv_field_t *v = col_vin >= 0 && col_vin < nf ? &f[col_vin] : NULL;
      const csv_field_t *st = col_site >= 0 && col_site < nf ? &f[col_site] : NULL;
      const csv_field_t *a = col_acct >= 0 && col_acct < nf ? &f[col_acct] : NULL;
      rc = fill_dev(out, v ? v->p : NULL, v ? v->n : 0, st ? st->p : NULL, st ? st->n : 0,
                    a ? a->p : NULL, a ? a->n : 0, dflt, name, line, err);
    }
    csv_free(f, nf);
  }
  free(f);
  if (!rc && !header) rc = fq_errf(err, FQ_EBADPARAM, "%s: empty: no header line", name);
  return rc;
}

/* ------------------------------------------------------------------ */
/* JSON                                                                 */

/* The line on which each element of the top-level array starts, found by
 * a scan that only tracks strings and nesting (jansson has parsed the text
 * already, so it is well-formed).  lines has room for `cap` entries. */
static void json_element_lines(const char *s, size_t len, uint32_t *lines, size_t cap) {
  uint32_t line = 1;
  int depth = 0;
  bool in_str = false, esc = false, want = false;
  size_t k = 0;
  for (size_t i = 0; i < len && k < cap; i++) {
    char c = s[i];
    if (c == '\n') line++;
    if (in_str) {
      if (esc) esc = false;
      else if (c == '\\') esc = true;
      else if (c == '"') in_str = false;
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
    if (want && c != ']') {
      lines[k++] = line;
      want = false;
    }
    if (c == '"') {
      in_str = true;
    } else if (c == '[' || c == '{') {
      depth++;
      if (depth == 1 && c == '[') want = true;
    } else if (c == ']' || c == '}') {
      depth--;
    } else if (c == ',' && depth == 1) {
      want = true;
    }
  }
}

static int parse_json(const char *text, size_t len, const char *dflt, const char *name,
                      fq_camp_devs_t *out, fq_err_t *err) {
  json_error_t je;
  json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
  if (!root)
    return fq_errf(err, FQ_EBADPARAM, "%s:%d:%d: not valid JSON: %s", name, je.line, je.column,
                   je.text);
  int rc = 0;
  if (!json_is_array(root)) {
    rc = fq_errf(err, FQ_EBADPARAM,
                 "%s: want a JSON array of {\"vin\" or \"site\", \"account\"} objects", name);
    json_decref(root);
    return rc;
  }
  size_t n = json_array_size(root);
  if (n > FQ_CAMP_MAX_DEVICES) {
    json_decref(root);
    return fq_errf(err, FQ_EBADPARAM,
                   "%s: %zu devices; a campaign takes at most %d (split the list into several "
                   "campaigns)",
                   name, n, FQ_CAMP_MAX_DEVICES);
  }
  uint32_t *lines = calloc(n ? n : 1, sizeof *lines);
  if (!lines) {
    json_decref(root);
    return fq_errf(err, -ENOMEM, "%s: out of memory", name);
  }
  json_element_lines(text, len, lines, n);
  for (size_t i = 0; i < n && !rc; i++) {
    json_t *e = json_array_get(root, i);
    uint32_t line = lines[i] ? lines[i] : 1;
    if (!json_is_object(e)) {
      rc = fq_errf(err, FQ_EBADPARAM, "%s:%" PRIu32 ": element %zu is not an object", name,
                   line, i + 1);
      break;
    }
    json_t *v = json_object_get(e, "vin"), *s = json_object_get(e, "site"),
           *a = json_object_get(e, "account");
    char sbuf[32];
    const char *vp = NULL, *sp = NULL, *ap = NULL;
    size_t vn = 0, sn = 0, an = 0;
    if (v && !json_is_null(v)) {
      if (!json_is_string(v)) {
        rc = fq_errf(err, FQ_EBADPARAM, "%s:%" PRIu32 ": \"vin\" of element %zu is not a string",
                     name, line, i + 1);
        break;
      }
      vp = json_string_value(v);
      vn = json_string_length(v);
    }
    if (s && !json_is_null(s)) {
      if (json_is_integer(s) && json_integer_value(s) > 0) {
        snprintf(sbuf, sizeof sbuf, "%" JSON_INTEGER_FORMAT, json_integer_value(s));
        sp = sbuf;
        sn = strlen(sbuf);
      } else if (json_is_string(s)) {
        sp = json_string_value(s);
        sn = json_string_length(s);
      } else {
        rc = fq_errf(err, FQ_EBADPARAM,
                     "%s:%" PRIu32 ": \"site\" of element %zu is not a positive integer", name,
                     line, i + 1);
        break;
      }
    }
    if (a && !json_is_null(a)) {
      if (!json_is_string(a)) {
        rc = fq_errf(err, FQ_EBADPARAM,
                     "%s:%" PRIu32 ": \"account\" of element %zu is not a string", name, line,
                     i + 1);
        break;
      }
      ap = json_string_value(a);
      an = json_string_length(a);
    }
    rc = fill_dev(out, vp, vn, sp, sn, ap, an, dflt, name, line, err);
  }
  free(lines);
  json_decref(root);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Parse, check duplicates                                              */

static int cmp_dev(const void *a, const void *b) {
  const fq_camp_dev_t *x = *(fq_camp_dev_t *const *)a, *y = *(fq_camp_dev_t *const *)b;
  if (x->site != y->site) return x->site < y->site ? -1 : 1;
  int c = strcmp(x->vin, y->vin);
  if (c) return c;
  return x->line < y->line ? -1 : x->line > y->line;
}

static int check_dups(const fq_camp_devs_t *d, const char *name, fq_err_t *err) {
  if (d->n < 2) return 0;
  const fq_camp_dev_t **p = malloc(d->n * sizeof *p);
  if (!p) return fq_errf(err, -ENOMEM, "%s: out of memory", name);
  for (size_t i = 0; i < d->n; i++) p[i] = &d->v[i];
  qsort(p, d->n, sizeof *p, cmp_dev);
  /* Report the duplicate that comes first in the file. */
  const fq_camp_dev_t *first = NULL, *again = NULL;
  for (size_t i = 1; i < d->n; i++)
    if (p[i]->site == p[i - 1]->site && strcmp(p[i]->vin, p[i - 1]->vin) == 0 &&
        (!again || p[i]->line < again->line)) {
      size_t j = i - 1;
      while (j > 0 && p[j - 1]->site == p[i]->site && strcmp(p[j - 1]->vin, p[i]->vin) == 0) j--;
      first = p[j];
      again = p[i];
    }
  int rc = 0;
  if (again) {
    if (again->site)
      rc = fq_errf(err, FQ_EBADPARAM,
                   "%s:%" PRIu32 ": duplicate device: site %" PRIu64 " is already on line %" PRIu32,
                   name, again->line, again->site, first->line);
    else
      rc = fq_errf(err, FQ_EBADPARAM,
                   "%s:%" PRIu32 ": duplicate device: VIN %s is already on line %" PRIu32, name,
                   again->line, again->vin, first->line);
  }
  free(p);
  return rc;
}

int fq_camp_format_of(const char *path) {
  size_t n = strlen(path);
  if (n > 4 && strcasecmp(path + n - 4, ".csv") == 0) return FQ_CAMP_FMT_CSV;
  if (n > 5 && strcasecmp(path + n - 5, ".json") == 0) return FQ_CAMP_FMT_JSON;
  return FQ_CAMP_FMT_AUTO;
}

int fq_camp_parse(const char *text, size_t len, int fmt, const char *default_account,
                  const char *name, fq_camp_devs_t *out, fq_err_t *err) {
  if (default_account && !*default_account) default_account = NULL;
  /* A UTF-8 byte order mark, as spreadsheet programs write it. */
  if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
    text += 3;
    len -= 3;
  }
  if (fmt == FQ_CAMP_FMT_AUTO) {
    size_t i = 0;
    while (i < len && isspace((unsigned char)text[i])) i++;
    fmt = i < len && text[i] == '[' ? FQ_CAMP_FMT_JSON : FQ_CAMP_FMT_CSV;
  }
  size_t before = out->n;
  int rc = fmt == FQ_CAMP_FMT_JSON ? parse_json(text, len, default_account, name, out, err)
                                   : parse_csv(text, len, default_account, name, out, err);
  if (!rc && out->n == before) rc = fq_errf(err, FQ_EBADPARAM, "%s: no devices", name);
  if (!rc) rc = check_dups(out, name, err);
  return rc;
}

void fq_camp_devs_free(fq_camp_devs_t *d) {
  free(d->v);
  memset(d, 0, sizeof *d);
}

/* ------------------------------------------------------------------ */
/* Requests                                                             */

/* The encoded size of one device entry, as pack_dev writes it. */
static size_t str_size(size_t n) { return n + (n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5); }

static size_t uint_size(uint64_t v) {
  return v < 128 ? 1 : v < 256 ? 2 : v < 65536 ? 3 : v <= UINT32_MAX ? 5 : 9;
}

static size_t dev_size(const fq_camp_dev_t *d) {
  size_t n = 1 + str_size(7) + str_size(strlen(d->account));
  return n + (d->site ? str_size(4) + uint_size(d->site) : str_size(3) + str_size(17));
}

static void pack_dev(msgpack_packer *pk, const fq_camp_dev_t *d) {
  msgpack_pack_map(pk, 2);
  if (d->site) {
    fq_mpbuf_str(pk, "site");
    msgpack_pack_uint64(pk, d->site);
  } else {
    fq_mpbuf_str(pk, "vin");
    fq_mpbuf_str(pk, d->vin);
  }
  fq_mpbuf_str(pk, "account");
  fq_mpbuf_str(pk, d->account);
}

/* Everything but the devices; the devices array header is packed for
 * `ndev` devices. */
static void pack_head(msgpack_packer *pk, const fq_camp_req_t *r, size_t ndev, size_t part,
                      size_t parts, bool has_req, int64_t req) {
  size_t n = 5 + (r->params ? 1 : 0) + (r->ttl_ms ? 1 : 0) + (r->rate > 0 ? 1 : 0) +
             (r->has_max_failure_ratio ? 1 : 0) + (r->not_before ? 1 : 0) +
             (parts > 1 ? 2 : 0) + (has_req ? 1 : 0);
  msgpack_pack_map(pk, n);
  fq_mpbuf_str(pk, "op");
  fq_mpbuf_str(pk, "campaign");
  fq_mpbuf_str(pk, "tenant");
  fq_mpbuf_str(pk, r->tenant ? r->tenant : "");
  fq_mpbuf_str(pk, "key");
  fq_mpbuf_str(pk, r->key ? r->key : "");
  fq_mpbuf_str(pk, "command");
  fq_mpbuf_str(pk, r->command ? r->command : "");
  if (r->params) {
    fq_mpbuf_str(pk, "params");
    fq_mpbuf_raw(pk, r->params, r->params_len);
  }
  if (r->ttl_ms) {
    fq_mpbuf_str(pk, "ttl_ms");
    msgpack_pack_int64(pk, r->ttl_ms);
  }
  if (r->rate > 0) {
    /* A whole rate goes as an integer, the common case, so that a strict
     * reader of either type takes it. */
    fq_mpbuf_str(pk, "rate");
    if (r->rate == (double)(int64_t)r->rate) msgpack_pack_int64(pk, (int64_t)r->rate);
    else msgpack_pack_double(pk, r->rate);
  }
  if (r->has_max_failure_ratio) {
    fq_mpbuf_str(pk, "max_failure_ratio");
    msgpack_pack_double(pk, r->max_failure_ratio);
  }
  if (r->not_before) {
    fq_mpbuf_str(pk, "not_before");
    msgpack_pack_int64(pk, r->not_before);
  }
  if (parts > 1) {
    fq_mpbuf_str(pk, "part");
    msgpack_pack_uint64(pk, part);
    fq_mpbuf_str(pk, "parts");
    msgpack_pack_uint64(pk, parts);
  }
  if (has_req) {
    fq_mpbuf_str(pk, "req");
    msgpack_pack_int64(pk, req);
  }
  fq_mpbuf_str(pk, "devices");
  msgpack_pack_array(pk, ndev);
}

int fq_camp_build(fq_buf_t *out, const fq_camp_req_t *r, const fq_camp_devs_t *d, size_t from,
                  size_t to, size_t part, size_t parts, bool has_req, int64_t req) {
  fq_mpbuf_t pc = {out, 0};
  msgpack_packer pk;
  msgpack_packer_init(&pk, &pc, fq_mpbuf_write);
  pack_head(&pk, r, to - from, part, parts, has_req, req);
  for (size_t i = from; i < to && !pc.rc; i++) pack_dev(&pk, &d->v[i]);
  return pc.rc;
}

int fq_camp_split(const fq_camp_req_t *r, const fq_camp_devs_t *d, size_t max_bytes,
                  size_t **starts, size_t *nparts, fq_err_t *err) {
  /* The header at its largest: part and parts of 1000 (3 bytes each), a
   * req of 9, the devices array header of 5. */
  fq_buf_t h;
  fq_buf_init(&h, 64 * 1024);
  fq_mpbuf_t pc = {&h, 0};
  msgpack_packer pk;
  msgpack_packer_init(&pk, &pc, fq_mpbuf_write);
  pack_head(&pk, r, 70000, FQ_CAMP_MAX_PARTS, FQ_CAMP_MAX_PARTS, true, INT64_MAX);
  size_t head = h.len;
  fq_buf_free(&h);
  if (pc.rc) return fq_errf(err, pc.rc, "the campaign's fields alone are too large");
  size_t cap = 16, k = 0;
  size_t *s = malloc(cap * sizeof *s);
  if (!s) return fq_errf(err, -ENOMEM, "out of memory");
  size_t used = head;
  s[k++] = 0;
  for (size_t i = 0; i < d->n; i++) {
    size_t ds = dev_size(&d->v[i]);
    if (head + ds > max_bytes) {
      free(s);
      return fq_errf(err, FQ_ETOOLARGE,
                     "line %" PRIu32 ": the device with the campaign's fields takes %zu bytes, "
                     "more than a request may (%zu)",
                     d->v[i].line, head + ds, max_bytes);
    }
    if (used + ds > max_bytes) {
      if (k == cap) {
        size_t *t = realloc(s, (cap *= 2) * sizeof *s);
        if (!t) {
          free(s);
          return fq_errf(err, -ENOMEM, "out of memory");
        }
        s = t;
      }
      s[k++] = i;
      used = head;
    }
    used += ds;
  }
  if (k > FQ_CAMP_MAX_PARTS) {
    free(s);
    return fq_errf(err, FQ_ETOOLARGE, "%zu parts needed, at most %d", k, FQ_CAMP_MAX_PARTS);
  }
  size_t *t = realloc(s, (k + 1) * sizeof *s);
  if (!t) {
    free(s);
    return fq_errf(err, -ENOMEM, "out of memory");
  }
  t[k] = d->n;
  *starts = t;
  *nparts = k;
  return 0;
}

int fq_camp_pack_params(fq_buf_t *out, const fq_pval_t *pv, size_t n) {
  fq_mpbuf_t pc = {out, 0};
  msgpack_packer pk;
  msgpack_packer_init(&pk, &pc, fq_mpbuf_write);
  msgpack_pack_map(&pk, n);
  for (size_t i = 0; i < n; i++) {
    msgpack_pack_str(&pk, pv[i].name_len);
    msgpack_pack_str_body(&pk, pv[i].name, pv[i].name_len);
    switch (pv[i].type) {
    case FQ_PT_BOOL:
      if (pv[i].v.b) msgpack_pack_true(&pk);
      else msgpack_pack_false(&pk);
      break;
    case FQ_PT_INT: msgpack_pack_int64(&pk, pv[i].v.i); break;
    case FQ_PT_FLOAT: msgpack_pack_double(&pk, pv[i].v.f); break;
    case FQ_PT_STR:
      msgpack_pack_str(&pk, pv[i].v.s.n);
      msgpack_pack_str_body(&pk, pv[i].v.s.p, pv[i].v.s.n);
      break;
    case FQ_PT_MAP: fq_mpbuf_raw(&pk, pv[i].v.raw.p, pv[i].v.raw.n); break;
    default: msgpack_pack_nil(&pk); break;
    }
  }
  return pc.rc;
}
