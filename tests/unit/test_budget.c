/*
 * Unit tests of the per-tenant daily budgets (src/daemon/budget.c) and of
 * their "budgets" config key: the UTC day and its reset time, the refusal
 * rule, counting (answers below 500; wakes apart), the day roll-over that
 * resets a budget (driven by explicit times, not by waiting a day), the
 * saved counts read back, and the config file's errors naming the tenant
 * and key.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "budget.h"
#include "config.h"
#include "fq_test.h"

/* 2026-12-04 00:00:00 UTC */
#define DAY0 1796342400000LL

FQ_TEST(day_and_reset_at) {
  CHECK_INT(fq_budget_day(DAY0), DAY0 / FQ_BUDGET_DAY_MS);
  CHECK_INT(fq_budget_reset_at(DAY0), DAY0 + FQ_BUDGET_DAY_MS);
  CHECK_INT(fq_budget_reset_at(DAY0 + 1), DAY0 + FQ_BUDGET_DAY_MS);
  CHECK_INT(fq_budget_reset_at(DAY0 + FQ_BUDGET_DAY_MS - 1), DAY0 + FQ_BUDGET_DAY_MS);
  /* Midnight itself belongs to the new day. */
  CHECK_INT(fq_budget_day(DAY0 + FQ_BUDGET_DAY_MS), fq_budget_day(DAY0) + 1);
  CHECK_INT(fq_budget_reset_at(DAY0 + FQ_BUDGET_DAY_MS), DAY0 + 2 * FQ_BUDGET_DAY_MS);
  CHECK_INT(fq_budget_day(-1), -1);
}

FQ_TEST(over_rule) {
  fq_budget_limit_t l = {"acme", 3, -1};
  CHECK(!fq_budget_over(&l, 2, 1000));
  CHECK(fq_budget_over(&l, 3, 0));
  fq_budget_limit_t w = {"acme", -1, 0};
  CHECK(fq_budget_over(&w, 0, 0));
  fq_budget_limit_t none = {"acme", -1, -1};
  CHECK(!fq_budget_over(&none, 1000000, 1000000));
  CHECK(!fq_budget_over(NULL, 5, 5));
}

FQ_TEST(count_check_and_rollover) {
  fq_budget_limit_t lim[] = {{"acme", 3, 1}, {"*", 100, -1}};
  fq_err_t err;
  fq_err_clear(&err);
  CHECK_INT(fq_budget_init(lim, 2, NULL, &err), 0);
  char msg[320];
  int64_t reset = 0, t = DAY0 + 3600000;
  /* 5xx and no answer are not billed. */
  fq_budget_count("acme", "a1", 500, false, t);
  fq_budget_count("acme", "a1", 0, false, t);
  fq_budget_count("acme", "a1", 200, false, t);
  fq_budget_count("acme", "a2", 429, false, t);
  CHECK_INT(fq_budget_check("acme", 4, t, &reset, msg, sizeof msg), 0);
  fq_budget_count("acme", "a1", 404, false, t); /* third billable, summed over accounts */
  CHECK_INT(fq_budget_check("acme", 4, t, &reset, msg, sizeof msg), FQ_EBUDGET);
  CHECK_INT(reset, DAY0 + FQ_BUDGET_DAY_MS);
  CHECK(strstr(msg, "acme") && strstr(msg, "daily_billable_requests") &&
        strstr(msg, "1796428800000"));
  /* Another tenant, and the "*" default, are apart. */
  CHECK_INT(fq_budget_check("beta", 4, t, &reset, msg, sizeof msg), 0);
  /* The next UTC day starts from zero. */
  CHECK_INT(fq_budget_check("acme", 4, DAY0 + FQ_BUDGET_DAY_MS - 1, &reset, msg, sizeof msg),
            FQ_EBUDGET);
  CHECK_INT(fq_budget_check("acme", 4, DAY0 + FQ_BUDGET_DAY_MS, &reset, msg, sizeof msg), 0);
  /* Wakes count apart: one wake_up answer uses acme's daily_wakeups (1). */
  int64_t t2 = DAY0 + FQ_BUDGET_DAY_MS + 10;
  fq_budget_count("acme", "a1", 200, true, t2);
  CHECK_INT(fq_budget_check("acme", 4, t2, &reset, msg, sizeof msg), FQ_EBUDGET);
  CHECK(strstr(msg, "daily_wakeups"));
  fq_usage_row_t *rows;
  size_t n = fq_budget_usage("acme", 4, 7, t2, &rows);
  CHECK_INT(n, 3); /* day 0: a1, a2; day 1: a1 */
  CHECK_STR(rows[0].date, "2026-12-04");
  CHECK_STR(rows[0].account, "a1");
  CHECK_INT(rows[0].billable, 2);
  CHECK_INT(rows[1].billable, 1);
  CHECK_STR(rows[2].date, "2026-12-05");
  CHECK_INT(rows[2].billable, 0);
  CHECK_INT(rows[2].wakeups, 1);
  free(rows);
  CHECK_INT(fq_budget_usage("acme", 4, 1, t2, &rows), 1); /* today only */
  free(rows);
  fq_budget_close();
}

FQ_TEST(saved_and_loaded) {
  char dir[] = "/tmp/fq-budget-XXXXXX";
  CHECK(mkdtemp(dir));
  fq_budget_limit_t lim[] = {{"acme", 2, -1}};
  fq_err_t err;
  fq_err_clear(&err);
  CHECK_INT(fq_budget_init(lim, 1, dir, &err), 0);
  int64_t now = fq_now_ms();
  fq_budget_count("acme", "a1", 200, false, now);
  fq_budget_count("acme", "a1", 200, false, now);
  fq_budget_close();
  CHECK_INT(fq_budget_init(lim, 1, dir, &err), 0);
  char msg[320];
  int64_t reset = 0;
  CHECK_INT(fq_budget_check("acme", 4, now, &reset, msg, sizeof msg), FQ_EBUDGET);
  fq_budget_close();
  /* A damaged file refuses the start instead of forgetting what was spent. */
  char path[128];
  snprintf(path, sizeof path, "%s/budget-usage.json", dir);
  FILE *f = fopen(path, "w");
  CHECK(f);
  fputs("[{\"day\": 1}", f);
  fclose(f);
  CHECK_INT(fq_budget_init(lim, 1, dir, &err), FQ_ECONFIG);
  CHECK(strstr(err.msg, "budget-usage.json"));
  fq_budget_close();
  unlink(path);
  rmdir(dir);
}

/* A kill -9 leaves no snapshot of the last counts: the journal has them. */
FQ_TEST(journal_replayed_after_a_crash) {
  char dir[] = "/tmp/fq-budget-XXXXXX";
  CHECK(mkdtemp(dir));
  fq_budget_limit_t lim[] = {{"acme", 3, -1}};
  fq_err_t err;
  fq_err_clear(&err);
  CHECK_INT(fq_budget_init(lim, 1, dir, &err), 0);
  int64_t now = fq_now_ms();
  fq_budget_count("acme", "acct with space", 200, false, now);
  fq_budget_count("acme", "a1", 200, false, now);
  fq_budget_count("acme", "a1", 200, true, now);
  /* No fq_budget_close(): as after a crash.  A line of an older generation
   * (already in the snapshot) and a torn last line count nothing. */
  char path[128];
  snprintf(path, sizeof path, "%s/budget-usage.log", dir);
  FILE *f = fopen(path, "a");
  CHECK(f);
  fprintf(f, "0 %lld 0 acme a1\n1 %lld 0 acme a", (long long)fq_budget_day(now),
          (long long)fq_budget_day(now));
  fclose(f);
  CHECK_INT(fq_budget_init(lim, 1, dir, &err), 0);
  fq_usage_row_t *rows;
  size_t n = fq_budget_usage("acme", 4, 1, now, &rows);
  CHECK_INT(n, 2);
  CHECK_STR(rows[0].account, "a1");
  CHECK_INT(rows[0].billable, 1);
  CHECK_INT(rows[0].wakeups, 1);
  CHECK_STR(rows[1].account, "acct with space");
  CHECK_INT(rows[1].billable, 1);
  free(rows);
  char msg[320];
  int64_t reset;
  CHECK_INT(fq_budget_check("acme", 4, now, &reset, msg, sizeof msg), 0);
  fq_budget_count("acme", "a1", 200, false, now);
  CHECK_INT(fq_budget_check("acme", 4, now, &reset, msg, sizeof msg), FQ_EBUDGET);
  fq_budget_close();
  /* After a clean stop, the snapshot alone holds everything. */
  CHECK_INT(fq_budget_init(lim, 1, dir, &err), 0);
  CHECK_INT(fq_budget_check("acme", 4, now, &reset, msg, sizeof msg), FQ_EBUDGET);
  fq_budget_close();
  char cmd[200];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK_INT(system(cmd), 0);
}

static int load(const char *json, fq_config_t *c, fq_err_t *err) {
  char path[] = "/tmp/fq-budget-cfg-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return -1;
  if (write(fd, json, strlen(json)) != (ssize_t)strlen(json)) return -1;
  close(fd);
  fq_config_defaults(c);
  int rc = fq_config_load_file(c, path, err);
  unlink(path);
  return rc;
}

FQ_TEST(config_budgets) {
  static fq_config_t c;
  fq_err_t err;
  fq_err_clear(&err);
  CHECK_INT(load("{\"budgets\": {\"acme\": {\"daily_billable_requests\": 3, \"daily_wakeups\": 1},"
                 " \"*\": {\"daily_wakeups\": 5}}}",
                 &c, &err),
            0);
  CHECK_INT(c.nbudgets, 2);
  CHECK_STR(c.budgets[0].tenant, "acme");
  CHECK_INT(c.budgets[0].billable, 3);
  CHECK_INT(c.budgets[0].wakeups, 1);
  CHECK_STR(c.budgets[1].tenant, "*");
  CHECK_INT(c.budgets[1].billable, -1);
  CHECK_INT(c.budgets[1].wakeups, 5);
  CHECK_INT(load("{\"budgets\": {\"acme\": {\"daily_billable\": 3}}}", &c, &err), FQ_ECONFIG);
  CHECK(strstr(err.msg, "acme") && strstr(err.msg, "daily_billable"));
  CHECK_INT(load("{\"budgets\": {\"acme\": {\"daily_wakeups\": -1}}}", &c, &err), FQ_ECONFIG);
  CHECK(strstr(err.msg, "acme") && strstr(err.msg, "daily_wakeups"));
  CHECK_INT(load("{\"budgets\": {\"acme\": {\"daily_wakeups\": \"3\"}}}", &c, &err), FQ_ECONFIG);
  CHECK_INT(load("{\"budgets\": {\"ac me\": {}}}", &c, &err), FQ_ECONFIG);
  CHECK(strstr(err.msg, "ac me"));
  CHECK_INT(load("{\"budgets\": [1]}", &c, &err), FQ_ECONFIG);
  CHECK(strstr(err.msg, "budgets"));
  CHECK_INT(load("{\"budgets\": {\"acme\": 3}}", &c, &err), FQ_ECONFIG);
  CHECK(strstr(err.msg, "acme"));
}

static void count_refusal(void *ud, const char *tenant, uint64_t n) {
  char *out = ud;
  snprintf(out + strlen(out), 256 - strlen(out), "%s=%llu;", tenant, (unsigned long long)n);
}

/* The clients file's budgets beside the config's: for a tenant (or "*")
 * both name, the clients file wins, both keys; a source replaced on a
 * reload takes effect at the next check; refusals are counted per tenant. */
FQ_TEST(clients_file_budgets_win_and_reload) {
  fq_budget_limit_t cfg[] = {{"acme", 100, -1}, {"beta", 0, -1}, {"*", 0, -1}};
  fq_budget_limit_t cl[] = {{"acme", 0, -1}, {"gamma", -1, -1}};
  fq_err_t err;
  fq_err_clear(&err);
  fq_budget_set_limits(FQ_BUDGET_CLIENTS, NULL, 0);
  CHECK_INT(fq_budget_init(cfg, 3, NULL, &err), 0);
  char msg[320];
  int64_t reset = 0, t = DAY0 + 1000;
  CHECK_INT(fq_budget_check("acme", 4, t, &reset, msg, sizeof msg), 0); /* 100 */
  fq_budget_set_limits(FQ_BUDGET_CLIENTS, cl, 2);
  CHECK_INT(fq_budget_check("acme", 4, t, &reset, msg, sizeof msg), FQ_EBUDGET); /* 0 wins */
  CHECK_INT(fq_budget_check("beta", 4, t, &reset, msg, sizeof msg), FQ_EBUDGET); /* config */
  /* gamma is named by the clients file without limits: none, although the
   * config's "*" would refuse it. */
  CHECK_INT(fq_budget_check("gamma", 5, t, &reset, msg, sizeof msg), 0);
  CHECK_INT(fq_budget_check("delta", 5, t, &reset, msg, sizeof msg), FQ_EBUDGET); /* "*" */
  char seen[256] = "";
  fq_budget_refusals(count_refusal, seen);
  CHECK_STR(seen, "acme=1;beta=1;delta=1;");
  /* A reload: the clients file drops its budgets, the config changes. */
  fq_budget_set_limits(FQ_BUDGET_CLIENTS, NULL, 0);
  CHECK_INT(fq_budget_check("acme", 4, t, &reset, msg, sizeof msg), 0);
  fq_budget_limit_t cfg2[] = {{"acme", 0, -1}};
  fq_budget_set_limits(FQ_BUDGET_CONFIG, cfg2, 1);
  CHECK_INT(fq_budget_check("acme", 4, t, &reset, msg, sizeof msg), FQ_EBUDGET);
  CHECK_INT(fq_budget_check("delta", 5, t, &reset, msg, sizeof msg), 0);
  /* No limits at all: nothing refused. */
  fq_budget_set_limits(FQ_BUDGET_CONFIG, NULL, 0);
  CHECK_INT(fq_budget_check("acme", 4, t, &reset, msg, sizeof msg), 0);
  seen[0] = 0;
  fq_budget_refusals(count_refusal, seen);
  CHECK_STR(seen, "acme=2;beta=1;delta=1;");
  fq_budget_close();
}
