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
#include <time.h>

#include "log.h"

typedef struct entry {
  int64_t day;
  char tenant[65];
  char account[129];
  int64_t billable, wakeups;
} entry_t;

static struct {
  pthread_mutex_t mu;
  fq_budget_limit_t limits[FQ_BUDGETS_MAX];
  size_t nlimits;
  const fq_budget_limit_t *deflt; /* the "*" limit, or NULL */
  entry_t *e;
  size_t n, cap;
  char path[1100];
  bool dirty;
  int64_t saved_at;
  atomic_uint_fast64_t refusals;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER};

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

/* Save the table (mutex held).  Days older than FQ_BUDGET_KEEP_DAYS go. */
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
  char tmp[1200];
  snprintf(tmp, sizeof tmp, "%s.tmp", g.path);
  if (!arr || json_dump_file(arr, tmp, JSON_COMPACT) != 0 || rename(tmp, g.path) != 0) {
    fq_error("budget", "cannot save the budget counts to %s: %s", g.path, fq_strerror(-errno));
  } else {
    g.dirty = false;
    g.saved_at = now_ms;
  }
  json_decref(arr);
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

int fq_budget_init(const fq_budget_limit_t *limits, size_t n, const char *data_dir,
                   fq_err_t *err) {
  pthread_mutex_lock(&g.mu);
  g.nlimits = n > FQ_BUDGETS_MAX ? FQ_BUDGETS_MAX : n;
  g.deflt = NULL;
  size_t w = 0;
  for (size_t i = 0; i < g.nlimits; i++) {
    if (strcmp(limits[i].tenant, "*") == 0) {
      g.limits[FQ_BUDGETS_MAX - 1] = limits[i];
      g.deflt = &g.limits[FQ_BUDGETS_MAX - 1];
    } else {
      g.limits[w++] = limits[i];
    }
  }
  g.nlimits = w;
  g.n = 0;
  int rc = 0;
  if (data_dir && data_dir[0]) {
    snprintf(g.path, sizeof g.path, "%s/budget-usage.json", data_dir);
    json_error_t je;
    json_t *root = json_load_file(g.path, 0, &je);
    if (!root) {
      FILE *f = fopen(g.path, "r");
      if (f) {
        /* There but unreadable: refuse to start rather than forget what was spent. */
        fclose(f);
        rc = fq_errf(err, FQ_ECONFIG, "%s: %s (line %d)", g.path, je.text, je.line);
      }
    } else {
      size_t i;
      json_t *v;
      json_array_foreach(root, i, v) {
        json_int_t day = 0, b = 0, wk = 0;
        const char *t = NULL, *a = NULL;
        if (json_unpack(v, "{sI ss ss sI sI}", "day", &day, "tenant", &t, "account", &a,
                        "billable", &b, "wakeups", &wk) != 0 ||
            strlen(t) > 64 || strlen(a) > 128) {
          rc = fq_errf(err, FQ_ECONFIG, "%s: entry %zu is malformed", g.path, i);
          break;
        }
        entry_t *e = find_add(day, t, a);
        if (!e) {
          rc = fq_errf(err, -ENOMEM, "budget counts: out of memory");
          break;
        }
        e->billable = b;
        e->wakeups = wk;
      }
      json_decref(root);
    }
  }
  pthread_mutex_unlock(&g.mu);
  return rc;
}

void fq_budget_close(void) {
  pthread_mutex_lock(&g.mu);
  save_locked(fq_now_ms());
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
    if (now_ms - g.saved_at >= 200) save_locked(now_ms);
  }
  pthread_mutex_unlock(&g.mu);
}

int fq_budget_check(const char *tenant, size_t tenant_len, int64_t now_ms, int64_t *reset_at,
                    char *msg, size_t cap) {
  if (!g.nlimits && !g.deflt) return 0; /* set once at start: no lock needed */
  const fq_budget_limit_t *lim = limit_of(tenant, tenant_len);
  if (!lim) return 0;
  int64_t day = fq_budget_day(now_ms), b = 0, wk = 0;
  pthread_mutex_lock(&g.mu);
  for (size_t i = 0; i < g.n; i++)
    if (g.e[i].day == day && strlen(g.e[i].tenant) == tenant_len &&
        memcmp(g.e[i].tenant, tenant, tenant_len) == 0) {
      b += g.e[i].billable;
      wk += g.e[i].wakeups;
    }
  pthread_mutex_unlock(&g.mu);
  if (!fq_budget_over(lim, b, wk)) return 0;
  *reset_at = fq_budget_reset_at(now_ms);
  bool billed = lim->billable >= 0 && b >= lim->billable;
  snprintf(msg, cap,
           "tenant \"%.*s\" has used its daily budget (%s %" PRId64 " of %" PRId64
           " today, UTC); nothing was stored; the budget resets at %" PRId64
           " (unix ms, next UTC midnight)",
           (int)tenant_len, tenant, billed ? "daily_billable_requests:" : "daily_wakeups:",
           billed ? b : wk, billed ? lim->billable : lim->wakeups, *reset_at);
  atomic_fetch_add(&g.refusals, 1);
  return FQ_EBUDGET;
}

uint64_t fq_budget_refusals(void) { return atomic_load(&g.refusals); }

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
