/*
 * Per-tenant daily budgets of Fleet API requests (issue 16, "Budgets").
 *
 * What counts is what Tesla bills: every Fleet API answer below 500 to a
 * request made for a command of the tenant.  Wakes are apart: a wake_up
 * answer counts in `wakeups` and not in `billable`, so that the two limits
 * (daily_billable_requests, daily_wakeups) are independent.  Days are UTC
 * days; a day's counts are kept per tenant and account.
 *
 * One process-wide table behind a mutex: shard threads count answers and
 * check submits.  Without any limit, a submit never takes the lock.  Durable: a snapshot DATA/budget-usage.json
 * and a journal DATA/budget-usage.log that each counted answer is
 * appended to (budget.c), read back at start.
 */
#ifndef FLEETQ_DAEMON_BUDGET_H
#define FLEETQ_DAEMON_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "fleetq/error.h"
#include "fleetq/wire.h"
#include "util.h"

#define FQ_BUDGETS_MAX 256
#define FQ_BUDGET_DAY_MS 86400000LL
/* Days of counts kept (older ones are dropped when the table is saved). */
#define FQ_BUDGET_KEEP_DAYS 90

typedef struct fq_budget_limit {
  char tenant[65];            /* a tenant name, or "*": every tenant without its own */
  int64_t billable;           /* daily_billable_requests; -1 = no limit */
  int64_t wakeups;            /* daily_wakeups; -1 = no limit */
} fq_budget_limit_t;

/* The UTC day of a unix-ms time, and the time (unix ms) the budgets of
 * that time's day reset: the next UTC midnight.  Pure. */
int64_t fq_budget_day(int64_t now_ms);
int64_t fq_budget_reset_at(int64_t now_ms);

/* Whether a day's counts are over a limit: pure (the refusal rule). */
bool fq_budget_over(const fq_budget_limit_t *lim, int64_t billable, int64_t wakeups);

/* Where limits come from: the config file's "budgets", and the clients
 * file's (docs/security.md).  For a tenant (or "*") both name, the clients
 * file's entry wins, both keys: a key it leaves out is no limit. */
enum { FQ_BUDGET_CONFIG = 0, FQ_BUDGET_CLIENTS = 1, FQ_BUDGET_SOURCES = 2 };

/* Read a "budgets" object ({"<tenant>" | "*": {"daily_billable_requests":
 * N, "daily_wakeups": M}}, each a non-negative integer, either left out =
 * no limit) into out (room for FQ_BUDGETS_MAX) and *n.  0, or FQ_ECONFIG
 * with err naming the mistake after `what` (a prefix such as "clients.json: "). */
int fq_budget_parse(json_t *v, const char *what, fq_budget_limit_t *out, size_t *n,
                    fq_err_t *err);

/* Replace one source's limits (copied; at most FQ_BUDGETS_MAX) and merge:
 * at start, and on a reload (SIGHUP).  Submits see them at once. */
void fq_budget_set_limits(int source, const fq_budget_limit_t *limits, size_t n);

/* The refusals so far per tenant (fleetq_budget_refusals_total): fn once
 * per tenant refused; "*" for the tenants past the first 1024. */
void fq_budget_refusals(void (*fn)(void *ud, const char *tenant, uint64_t n), void *ud);

/* Start: the config's limits (copied) and the saved counts under data_dir. */
int fq_budget_init(const fq_budget_limit_t *limits, size_t n, const char *data_dir,
                   fq_err_t *err);
/* Save (when dirty) and free. */
void fq_budget_close(void);

/* One Fleet API answer (HTTP status; 0 = no answer) for a command of
 * tenant through account; wake: it answered a wake_up. */
void fq_budget_count(const char *tenant, const char *account, long status, bool wake,
                     int64_t now_ms);

/* A new submit of tenant: 0, or FQ_EBUDGET with msg and *reset_at. */
int fq_budget_check(const char *tenant, size_t tenant_len, int64_t now_ms, int64_t *reset_at,
                    char *msg, size_t cap);

/* The counts of the last `days` UTC days (1 = today), of one tenant
 * when tenant is not NULL, oldest day first: a malloc'd array (*out, its
 * length returned; *out NULL on ENOMEM or none). */
size_t fq_budget_usage(const char *tenant, size_t tenant_len, int days, int64_t now_ms,
                       fq_usage_row_t **out);

#endif
