/*
 * Per-tenant daily budgets.  See budget.h.
 */
#include "budget.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

typedef struct entry {
  int64_t day;
  char tenant[65];
  char account[129];
  int64_t billable, wakeups;
} entry_t;

/* Refusals per tenant for the metrics: the first REFUSALS_MAX tenants by
 * name, the rest together under "*" (no tenant is named so), so that a
 * "*" limit refusing many tenants cannot grow the scrape without bound. */
#define REFUSALS_MAX 1024

static struct {
  pthread_mutex_t mu;
  /* The limits in force: the config's and the clients file's merged
   * (fq_budget_set_limits), "*" apart in deflt. */
  fq_budget_limit_t limits[2 * FQ_BUDGETS_MAX];
  size_t nlimits;
  fq_budget_limit_t deflt_lim;
  const fq_budget_limit_t *deflt; /* &deflt_lim, or NULL */
  /* Each source as last set. */
  fq_budget_limit_t src[FQ_BUDGET_SOURCES][FQ_BUDGETS_MAX];
  size_t nsrc[FQ_BUDGET_SOURCES];
  /* Any limit at all: read without the lock so that a daemon without
   * budgets never takes it on submit. */
  atomic_bool any;
  struct {
    char tenant[65];
    uint64_t n;
  } refusals[REFUSALS_MAX];
  size_t nrefusals;
  uint64_t refusals_other;
  entry_t *e;
  size_t n, cap;
  char path[1100];            /* the snapshot, budget-usage.json */
  char jpath[1100];           /* the journal, budget-usage.log */
  int jfd;                    /* the journal, open for appends; -1 = none */
  uint64_t gen;               /* journal generation the snapshot holds up to */
  uint64_t jlines;            /* lines in the journal since the snapshot */
  bool dirty;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .jfd = -1};

int64_t fq_budget_day(int64_t now_ms) {
  /* Floor division: a time before 1970 still lands in its own day. */
  int64_t d = now_ms / FQ_BUDGET_DAY_MS;
  if (now_ms % FQ_BUDGET_DAY_MS < 0) d--;
  return d;
}

int64_t fq_budget_reset_at(int64_t now_ms) { return (fq_budget_day(now_ms) + 1) * FQ_BUDGET_DAY_MS; }

bool fq_budget_over(const fq_budget_limit_t *lim, int64_t billable, int64_t wakeups) {
  if (!lim) return false;
  return (lim->billable >= 0 && billable >= lim->billable) ||
         (lim->wakeups >= 0 && wakeups >= lim->wakeups);
}

static const fq_budget_limit_t *limit_of(const char *tenant, size_t len) {
  for (size_t i = 0; i < g.nlimits; i++)
    if (strlen(g.limits[i].tenant) == len && memcmp(g.limits[i].tenant, tenant, len) == 0)
      return &g.limits[i];
  return g.deflt;
}

static void day_date(int64_t day, char *out, size_t cap) {
  time_t t = (time_t)(day * 86400);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, cap, "%Y-%m-%d", &tm);
}

/* Durability: the snapshot (budget-usage.json: {"gen", "counts": [...]})
 * plus a journal (budget-usage.log) that every counted answer appends one
 * line to ("<gen> <day> <wake 0|1> <tenant> <account>"), with one write(2)
 * on a descriptor opened O_APPEND: a kill -9 loses nothing the kernel
 * took.  Each JOURNAL_MAX lines (and at start and stop) the table goes
 * into a new snapshot under gen + 1 and the journal is emptied; a journal
 * line of an older gen than the snapshot's was already in it and is
 * skipped, so a crash between the rename and the truncation counts
 * nothing twice. */
#define JOURNAL_MAX 20000

/* Write the snapshot and empty the journal (mutex held).  Days older than
 * FQ_BUDGET_KEEP_DAYS go. */
static void save_locked(int64_t now_ms) {
  if (!g.path[0] || !g.dirty) return;
  int64_t oldest = fq_budget_day(now_ms) - FQ_BUDGET_KEEP_DAYS;
  size_t w = 0;
  for (size_t i = 0; i < g.n; i++)
    if (g.e[i].day > oldest) g.e[w++] = g.e[i];
  g.n = w;
  json_t *arr = json_array();
  for (size_t i = 0; arr && i < g.n; i++)
    json_array_append_new(arr, json_pack("{sI ss ss sI sI}", "day", (json_int_t)g.e[i].day,
                                         "tenant", g.e[i].tenant, "account", g.e[i].account,
                                         "billable", (json_int_t)g.e[i].billable, "wakeups",
                                         (json_int_t)g.e[i].wakeups));
  json_t *root = arr ? json_pack("{sI so}", "gen", (json_int_t)(g.gen + 1), "counts", arr) : NULL;
  char tmp[1200];
  snprintf(tmp, sizeof tmp, "%s.tmp", g.path);
  if (!root || json_dump_file(root, tmp, JSON_COMPACT) != 0 || rename(tmp, g.path) != 0) {
    fq_error("budget", "cannot save the budget counts to %s: %s", g.path, fq_strerror(-errno));
  } else {
    g.gen++;
    g.dirty = false;
    if (g.jfd >= 0 && ftruncate(g.jfd, 0) == 0) g.jlines = 0;
  }
  json_decref(root);
}

static void journal_locked(int64_t day, bool wake, const char *tenant, const char *account) {
  if (g.jfd < 0) return;
  char line[300];
  int n = snprintf(line, sizeof line, "%" PRIu64 " %" PRId64 " %d %s %s\n", g.gen, day,
                   wake ? 1 : 0, tenant, account);
  if (n <= 0 || (size_t)n >= sizeof line || write(g.jfd, line, (size_t)n) != n)
    fq_error("budget", "cannot append to %s: %s", g.jpath, fq_strerror(-errno));
  else
    g.jlines++;
}

static entry_t *find_add(int64_t day, const char *tenant, const char *account) {
  for (size_t i = g.n; i-- > 0;)
    if (g.e[i].day == day && strcmp(g.e[i].tenant, tenant) == 0 &&
        strcmp(g.e[i].account, account) == 0)
      return &g.e[i];
  if (g.n == g.cap) {
    size_t nc = g.cap ? g.cap * 2 : 64;
    entry_t *ne = realloc(g.e, nc * sizeof *ne);
    if (!ne) return NULL;
    g.e = ne;
    g.cap = nc;
  }
  entry_t *e = &g.e[g.n++];
  memset(e, 0, sizeof *e);
  e->day = day;
  snprintf(e->tenant, sizeof e->tenant, "%s", tenant);
  snprintf(e->account, sizeof e->account, "%s", account);
  return e;
}

/* Read the snapshot into the table (mutex held).  No file: nothing spent
 * yet.  A file there but unreadable refuses the start rather than forget
 * what was spent. */
static int load_locked(fq_err_t *err) {
  json_error_t je;
  json_t *root = json_load_file(g.path, 0, &je);
  if (!root) {
    if (access(g.path, F_OK) != 0) return 0;
    return fq_errf(err, FQ_ECONFIG, "%s: %s (line %d)", g.path, je.text, je.line);
  }
  int rc = 0;
  json_int_t gen = 0;
  json_t *arr = NULL;
  if (json_unpack(root, "{sI so}", "gen", &gen, "counts", &arr) != 0 || !json_is_array(arr) ||
      gen < 0) {
    rc = fq_errf(err, FQ_ECONFIG, "%s: expected {\"gen\": N, \"counts\": [...]}", g.path);
    goto out;
  }
  g.gen = (uint64_t)gen;
  size_t i;
  json_t *v;
  json_array_foreach(arr, i, v) {
    json_int_t day = 0, b = 0, wk = 0;
    const char *t = NULL, *a = NULL;
    if (json_unpack(v, "{sI ss ss sI sI}", "day", &day, "tenant", &t, "account", &a, "billable",
                    &b, "wakeups", &wk) != 0 ||
        strlen(t) > 64 || strlen(a) > 128) {
      rc = fq_errf(err, FQ_ECONFIG, "%s: entry %zu is malformed", g.path, i);
      goto out;
    }
    entry_t *e = find_add(day, t, a);
    if (!e) {
      rc = fq_errf(err, -ENOMEM, "budget counts: out of memory");
      goto out;
    }
    e->billable = b;
    e->wakeups = wk;
  }
out:
  json_decref(root);
  return rc;
}

/* Add the journal's lines of the snapshot's generation or later (mutex
 * held).  A last line cut short by a crash is skipped. */
static int replay_locked(fq_err_t *err) {
  FILE *f = fopen(g.jpath, "r");
  if (!f) return errno == ENOENT ? 0 : fq_errf(err, -errno, "%s: %s", g.jpath, fq_strerror(-errno));
  char line[400];
  int rc = 0;
  while (fgets(line, sizeof line, f)) {
    size_t len = strlen(line);
    if (!len || line[len - 1] != '\n') break; /* torn last line */
    uint64_t gen;
    int64_t day;
    int wake;
    char t[65];
    int off = -1;
    /* The account last, as the rest of the line: it may hold spaces. */
    if (sscanf(line, "%" SCNu64 " %" SCNd64 " %d %64s %n", &gen, &day, &wake, t, &off) != 4 ||
        off < 0 || len - 1 - (size_t)off > 128) {
      fq_warn("budget", "%s: a damaged line is skipped", g.jpath);
      continue;
    }
    if (gen < g.gen) continue;
    line[len - 1] = 0;
    entry_t *e = find_add(day, t, line + off);
    if (!e) {
      rc = fq_errf(err, -ENOMEM, "budget counts: out of memory");
      break;
    }
    if (wake)
      e->wakeups++;
    else
      e->billable++;
    g.dirty = true;
  }
  fclose(f);
  return rc;
}

/* Merge the sources into the limits in force: a tenant (or "*") named by
 * the clients file takes its limits from there alone, both keys (one left
 * out there means no limit on that count, whatever the config says); the
 * config's other tenants keep theirs. */
static void merge_locked(void) {
  g.nlimits = 0;
  g.deflt = NULL;
  for (int s = FQ_BUDGET_SOURCES - 1; s >= 0; s--)
    for (size_t i = 0; i < g.nsrc[s]; i++) {
      const fq_budget_limit_t *l = &g.src[s][i];
      bool taken = false;
      if (strcmp(l->tenant, "*") == 0) {
        if (g.deflt) continue; /* the clients file's "*" came first */
        g.deflt_lim = *l;
        g.deflt = &g.deflt_lim;
        continue;
      }
      for (size_t k = 0; k < g.nlimits && !taken; k++)
        taken = strcmp(g.limits[k].tenant, l->tenant) == 0;
      if (!taken) g.limits[g.nlimits++] = *l;
    }
  atomic_store_explicit(&g.any, g.nlimits > 0 || g.deflt, memory_order_release);
}

void fq_budget_set_limits(int source, const fq_budget_limit_t *limits, size_t n) {
  if (source < 0 || source >= FQ_BUDGET_SOURCES) return;
  if (n > FQ_BUDGETS_MAX) n = FQ_BUDGETS_MAX;
  pthread_mutex_lock(&g.mu);
  if (n) memcpy(g.src[source], limits, n * sizeof *limits);
  g.nsrc[source] = n;
  merge_locked();
  pthread_mutex_unlock(&g.mu);
}

int fq_budget_parse(json_t *v, const char *what, fq_budget_limit_t *out, size_t *n,
                    fq_err_t *err) {
  if (!json_is_object(v))
    return fq_errf(err, FQ_ECONFIG, "%s\"budgets\": expected an object of tenants", what);
  *n = 0;
  const char *t;
  json_t *o;
  json_object_foreach(v, t, o) {
    size_t tl = strlen(t);
    bool ok = tl >= 1 && tl <= 64;
    for (size_t i = 0; ok && i < tl; i++)
      ok = (t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= 'a' && t[i] <= 'z') ||
           (t[i] >= '0' && t[i] <= '9') || t[i] == '.' || t[i] == '_' || t[i] == '-';
    if (!ok && strcmp(t, "*") != 0)
      return fq_errf(err, FQ_ECONFIG,
                     "%s\"budgets\": \"%.70s\" is not a tenant name (1-64 of A-Z a-z 0-9 . _ -) "
                     "nor \"*\"",
                     what, t);
    if (!json_is_object(o))
      return fq_errf(err, FQ_ECONFIG, "%s\"budgets\": tenant \"%s\": expected an object", what,
                     t);
    if (*n == FQ_BUDGETS_MAX)
      return fq_errf(err, FQ_ECONFIG, "%s\"budgets\": more than %d tenants", what,
                     FQ_BUDGETS_MAX);
    fq_budget_limit_t *b = &out[*n];
    snprintf(b->tenant, sizeof b->tenant, "%s", t);
    b->billable = b->wakeups = -1;
    const char *k;
    json_t *x;
    json_object_foreach(o, k, x) {
      int64_t *dst = strcmp(k, "daily_billable_requests") == 0 ? &b->billable
                     : strcmp(k, "daily_wakeups") == 0         ? &b->wakeups
                                                               : NULL;
      if (!dst)
        return fq_errf(err, FQ_ECONFIG,
                       "%s\"budgets\": tenant \"%s\": unknown key \"%.64s\" "
                       "(daily_billable_requests, daily_wakeups)",
                       what, t, k);
      if (!json_is_integer(x) || json_integer_value(x) < 0)
        return fq_errf(err, FQ_ECONFIG,
                       "%s\"budgets\": tenant \"%s\": \"%s\" must be an integer >= 0", what, t,
                       k);
      *dst = json_integer_value(x);
    }
    (*n)++;
  }
  return 0;
}

int fq_budget_init(const fq_budget_limit_t *limits, size_t n, const char *data_dir,
                   fq_err_t *err) {
  fq_budget_set_limits(FQ_BUDGET_CONFIG, limits, n);
  pthread_mutex_lock(&g.mu);
  g.nrefusals = 0;
  g.refusals_other = 0;
  g.n = 0;
  g.gen = 0;
  g.jlines = 0;
  g.jfd = -1;
  g.path[0] = g.jpath[0] = 0;
  int rc = 0;
  if (data_dir && data_dir[0]) {
    snprintf(g.path, sizeof g.path, "%s/budget-usage.json", data_dir);
    snprintf(g.jpath, sizeof g.jpath, "%s/budget-usage.log", data_dir);
    rc = load_locked(err);
    if (!rc) rc = replay_locked(err);
    /* A full or read-only disk must not keep fleetqd from starting (the
     * commands already accepted have to go on): the counts are then kept
     * in memory only, and said so. */
    if (!rc && (g.jfd = open(g.jpath, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600)) < 0)
      fq_error("budget", "cannot open %s, the budget counts of this run are not kept "
               "across a crash: %s", g.jpath, fq_strerror(-errno));
    /* What the journal held goes into a new snapshot at once, written
     * even when nothing moved, so that the journal's lines carry a
     * generation above 0.  When it cannot be written the journal keeps
     * its lines and their generation: nothing is lost or counted twice. */
    if (!rc) {
      g.dirty = true;
      save_locked(fq_now_ms());
    }
  }
  pthread_mutex_unlock(&g.mu);
  return rc;
}

void fq_budget_close(void) {
  pthread_mutex_lock(&g.mu);
  save_locked(fq_now_ms());
  if (g.jfd >= 0) close(g.jfd);
  g.jfd = -1;
  free(g.e);
  g.e = NULL;
  g.n = g.cap = 0;
  pthread_mutex_unlock(&g.mu);
}

void fq_budget_count(const char *tenant, const char *account, long status, bool wake,
                     int64_t now_ms) {
  /* Not answered, or a server error: Tesla bills neither. */
  if (status <= 0 || status >= 500 || !tenant || !tenant[0]) return;
  pthread_mutex_lock(&g.mu);
  entry_t *e = find_add(fq_budget_day(now_ms), tenant, account ? account : "");
  if (e) {
    if (wake)
      e->wakeups++;
    else
      e->billable++;
    g.dirty = true;
    journal_locked(e->day, wake, e->tenant, e->account);
    if (g.jlines >= JOURNAL_MAX) save_locked(now_ms);
  }
  pthread_mutex_unlock(&g.mu);
}

static void count_refusal_locked(const char *tenant, size_t len) {
  for (size_t i = 0; i < g.nrefusals; i++)
    if (strlen(g.refusals[i].tenant) == len && memcmp(g.refusals[i].tenant, tenant, len) == 0) {
      g.refusals[i].n++;
      return;
    }
  if (g.nrefusals == REFUSALS_MAX || len >= sizeof g.refusals[0].tenant) {
    g.refusals_other++;
    return;
  }
  memcpy(g.refusals[g.nrefusals].tenant, tenant, len);
  g.refusals[g.nrefusals].tenant[len] = 0;
  g.refusals[g.nrefusals++].n = 1;
}

void fq_budget_refusals(void (*fn)(void *ud, const char *tenant, uint64_t n), void *ud) {
  pthread_mutex_lock(&g.mu);
  for (size_t i = 0; i < g.nrefusals; i++) fn(ud, g.refusals[i].tenant, g.refusals[i].n);
  if (g.refusals_other) fn(ud, "*", g.refusals_other);
  pthread_mutex_unlock(&g.mu);
}

int fq_budget_check(const char *tenant, size_t tenant_len, int64_t now_ms, int64_t *reset_at,
                    char *msg, size_t cap) {
  if (!atomic_load_explicit(&g.any, memory_order_acquire)) return 0;
  int64_t day = fq_budget_day(now_ms), b = 0, wk = 0;
  pthread_mutex_lock(&g.mu);
  /* Limits change on a reload: copied under the lock. */
  const fq_budget_limit_t *lp = limit_of(tenant, tenant_len);
  if (!lp) {
    pthread_mutex_unlock(&g.mu);
    return 0;
  }
  fq_budget_limit_t l = *lp;
  const fq_budget_limit_t *lim = &l;
  for (size_t i = 0; i < g.n; i++)
    if (g.e[i].day == day && strlen(g.e[i].tenant) == tenant_len &&
        memcmp(g.e[i].tenant, tenant, tenant_len) == 0) {
      b += g.e[i].billable;
      wk += g.e[i].wakeups;
    }
  bool over = fq_budget_over(lim, b, wk);
  if (over) count_refusal_locked(tenant, tenant_len);
  pthread_mutex_unlock(&g.mu);
  if (!over) return 0;
  *reset_at = fq_budget_reset_at(now_ms);
  bool billed = lim->billable >= 0 && b >= lim->billable;
  snprintf(msg, cap,
           "tenant \"%.*s\" has used its daily budget (%s %" PRId64 " of %" PRId64
           " today, UTC); nothing was stored; the budget resets at %" PRId64
           " (unix ms, next UTC midnight)",
           (int)tenant_len, tenant, billed ? "daily_billable_requests:" : "daily_wakeups:",
           billed ? b : wk, billed ? lim->billable : lim->wakeups, *reset_at);
  return FQ_EBUDGET;
}

static int row_cmp(const void *a, const void *b) {
  const fq_usage_row_t *x = a, *y = b;
  int c = strcmp(x->date, y->date);
  if (!c) c = strcmp(x->tenant, y->tenant);
  if (!c) c = strcmp(x->account, y->account);
  return c;
}

size_t fq_budget_usage(const char *tenant, size_t tenant_len, int days, int64_t now_ms,
                       fq_usage_row_t **out) {
  int64_t today = fq_budget_day(now_ms);
  *out = NULL;
  pthread_mutex_lock(&g.mu);
  size_t n = 0;
  fq_usage_row_t *rows = g.n ? calloc(g.n, sizeof *rows) : NULL;
  for (size_t i = 0; rows && i < g.n; i++) {
    const entry_t *e = &g.e[i];
    if (e->day <= today - days || e->day > today) continue;
    if (tenant && (strlen(e->tenant) != tenant_len || memcmp(e->tenant, tenant, tenant_len) != 0))
      continue;
    fq_usage_row_t *r = &rows[n++];
    day_date(e->day, r->date, sizeof r->date);
    snprintf(r->tenant, sizeof r->tenant, "%s", e->tenant);
    snprintf(r->account, sizeof r->account, "%s", e->account);
    r->billable = e->billable;
    r->wakeups = e->wakeups;
  }
  pthread_mutex_unlock(&g.mu);
  if (n) qsort(rows, n, sizeof *rows, row_cmp);
  *out = rows;
  return n;
}
