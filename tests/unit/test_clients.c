/*
 * Unit tests of the clients file (src/daemon/clients.c): what it accepts,
 * every mistake it refuses (with the entry named), look-ups, the narrowing
 * check a reload uses, and how subscriptions are confined to tenants.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "clients.h"
#include "fq_test.h"

static char dir[] = "/tmp/fq-clients-XXXXXX";
static char k1[41], k2[41], k3[41];

static void keys(void) {
  char sec[41];
  if (k1[0]) return;
  zmq_curve_keypair(k1, sec);
  zmq_curve_keypair(k2, sec);
  zmq_curve_keypair(k3, sec);
}

/* Write text (with K1/K2 replaced by keys) to a fresh file of mode mode. */
static const char *write_file(const char *text, mode_t mode) {
  static char path[128];
  static int n;
  if (!strchr(dir, '/') || strstr(dir, "XXXXXX")) {
    if (!mkdtemp(dir)) return NULL;
  }
  snprintf(path, sizeof path, "%s/c%d.json", dir, n++);
  char buf[4096];
  size_t o = 0;
  for (const char *p = text; *p && o + 48 < sizeof buf;) {
    if (!strncmp(p, "K1", 2) || !strncmp(p, "K2", 2) || !strncmp(p, "K3", 2)) {
      const char *k = p[1] == '1' ? k1 : p[1] == '2' ? k2 : k3;
      memcpy(buf + o, k, 40);
      o += 40;
      p += 2;
    } else {
      buf[o++] = *p++;
    }
  }
  buf[o] = 0;
  FILE *f = fopen(path, "w");
  if (!f) return NULL;
  fputs(buf, f);
  fclose(f);
  chmod(path, mode);
  return path;
}

/* Each test runs in its own process with its own directory: remove it. */
static void cleanup(void) {
  if (strstr(dir, "XXXXXX")) return;
  char cmd[160];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) printf("  could not remove %s\n", dir);
}

static fq_clients_t *load(const char *text, fq_err_t *err) {
  fq_err_clear(err);
  return fq_clients_load(write_file(text, 0600), err);
}

FQ_TEST(clients_load_and_find) {
  keys();
  fq_err_t err;
  fq_clients_t *c = load("[{\"name\": \"billing-svc\", \"key\": \"K1\", \"tenants\": [\"acme\", "
                         "\"globex\"], \"roles\": [\"submit\", \"read\"]},\n"
                         " {\"name\": \"ops\", \"key\": \"K2\", \"tenants\": [\"*\"], \"roles\": "
                         "[\"admin\", \"subscribe\", \"cancel\"]}]",
                         &err);
  CHECK(c != NULL);
  if (!c) {
    printf("  %s\n", err.msg);
    cleanup();
    return;
  }
  CHECK_INT(fq_clients_count(c), 2);
  const fq_client_entry_t *e = fq_clients_find(c, k1, 40);
  CHECK(e != NULL);
  if (e) {
    CHECK_STR(e->name, "billing-svc");
    CHECK_INT(e->roles, FQ_ROLE_SUBMIT | FQ_ROLE_READ);
    CHECK(!e->all_tenants);
    CHECK(fq_client_has_tenant(e, "acme", 4));
    CHECK(fq_client_has_tenant(e, "globex", 6));
    CHECK(!fq_client_has_tenant(e, "acm", 3));
    CHECK(!fq_client_has_tenant(e, "acme2", 5));
    CHECK_MEM(e->acl, e->acl_len, "acme\0globex\0", 12);
  }
  e = fq_clients_find(c, k2, 40);
  CHECK(e && e->all_tenants && fq_client_has_tenant(e, "anything", 8));
  CHECK(e && e->acl_len == 0);
  CHECK(fq_clients_find(c, k3, 40) == NULL);
  CHECK(fq_clients_find(c, k1, 39) == NULL);
  char roles[64];
  fq_client_roles_str(FQ_ROLE_READ | FQ_ROLE_ADMIN, roles, sizeof roles);
  CHECK_STR(roles, "read,admin");
  fq_clients_free(&c);
  CHECK(c == NULL);
  /* An empty list is valid: nobody gets in. */
  c = load("[]", &err);
  CHECK(c != NULL && fq_clients_count(c) == 0);
  size_t nb = 9;
  CHECK(fq_clients_budgets(c, &nb) == NULL && nb == 0);
  fq_clients_free(&c);
  /* The object form: the same entries, and per-tenant budgets. */
  c = load("{\"clients\": [], \"budgets\": {\"acme\": {\"daily_billable_requests\": 5}, "
           "\"*\": {\"daily_wakeups\": 0}}}",
           &err);
  CHECK(c != NULL);
  const fq_budget_limit_t *b = fq_clients_budgets(c, &nb);
  CHECK_INT(nb, 2);
  if (b && nb == 2) {
    CHECK_STR(b[0].tenant, "acme");
    CHECK_INT(b[0].billable, 5);
    CHECK_INT(b[0].wakeups, -1);
    CHECK_STR(b[1].tenant, "*");
    CHECK_INT(b[1].billable, -1);
    CHECK_INT(b[1].wakeups, 0);
  }
  fq_clients_free(&c);
  cleanup();
}

/* Each mistake is refused with a message holding `want`. */
static void refused(const char *text, const char *want) {
  fq_err_t err;
  fq_clients_t *c = load(text, &err);
  CHECK(c == NULL);
  if (c) {
    printf("  accepted: %s\n", text);
    fq_clients_free(&c);
    return;
  }
  if (!strstr(err.msg, want)) {
    printf("  message \"%s\" lacks \"%s\"\n", err.msg, want);
    CHECK(strstr(err.msg, want) != NULL);
  }
  CHECK_INT(err.code, FQ_ECONFIG);
}

FQ_TEST(clients_mistakes_name_the_entry) {
  keys();
  /* The object form: the entries under "clients", budgets beside them. */
  refused("{}", "\"clients\": required");
  refused("{\"clients\": {}}", "expected a JSON array of client entries");
  refused("{\"clients\": [], \"budget\": {}}", "unknown key \"budget\" (clients, budgets)");
  refused("{\"clients\": [], \"budgets\": []}", "\"budgets\": expected an object of tenants");
  refused("{\"clients\": [], \"budgets\": {\"acme\": {\"daily_wakeups\": -1}}}",
          "\"budgets\": tenant \"acme\": \"daily_wakeups\" must be an integer >= 0");
  refused("{\"clients\": [], \"budgets\": {\"a c\": {}}}", "is not a tenant name");
  refused("{\"clients\": [], \"budgets\": {\"acme\": {\"daily_wakeup\": 1}}}",
          "unknown key \"daily_wakeup\"");
  refused("[1]", "entry 1: expected an object");
  refused("[{\"key\": \"K1\", \"tenants\": [\"a\"], \"roles\": [\"read\"]}]",
          "entry 1: \"name\" is required");
  refused("[{\"name\": \"a b\", \"key\": \"K1\", \"tenants\": [\"a\"], \"roles\": [\"read\"]}]",
          "\"name\" is required: 1-64");
  refused("[{\"name\": \"x\", \"key\": \"K1\", \"tenants\": [\"a\"], \"roles\": [\"read\"], "
          "\"rolez\": 1}]",
          "entry 1 (\"x\"): unknown key \"rolez\"");
  refused("[{\"name\": \"x\", \"tenants\": [\"a\"], \"roles\": [\"read\"]}]",
          "entry 1 (\"x\"): \"key\" is required");
  refused("[{\"name\": \"x\", \"key\": \"not-a-key\", \"tenants\": [\"a\"], \"roles\": [\"read\"]}]",
          "\"key\" is not a CURVE public key");
  /* 40 characters, but '"' is not Z85... use a space instead. */
  refused("[{\"name\": \"x\", \"key\": \"                                        \", \"tenants\": "
          "[\"a\"], \"roles\": [\"read\"]}]",
          "is not a CURVE public key");
  refused("[{\"name\": \"x\", \"key\": \"K1\", \"tenants\": [\"a\"], \"roles\": [\"reed\"]}]",
          "entry 1 (\"x\"): \"roles\"[0] \"reed\" is not a role");
  refused("[{\"name\": \"x\", \"key\": \"K1\", \"tenants\": [\"a\"], \"roles\": []}]",
          "\"roles\" must be a non-empty array");
  refused("[{\"name\": \"x\", \"key\": \"K1\", \"tenants\": [\"a\"]}]", "\"roles\" is required");
  refused("[{\"name\": \"x\", \"key\": \"K1\", \"tenants\": [\"ac*\"], \"roles\": [\"read\"]}]",
          "\"tenants\"[0] \"ac*\" is not a tenant name");
  refused("[{\"name\": \"x\", \"key\": \"K1\", \"tenants\": [\"*\", \"a\"], \"roles\": [\"read\"]}]",
          "must be the only entry");
  refused("[{\"name\": \"x\", \"key\": \"K1\", \"tenants\": [], \"roles\": [\"read\"]}]",
          "\"tenants\" must be a non-empty array");
  refused("[{\"name\": \"x\", \"key\": \"K1\", \"tenants\": [\"a\", \"a\"], \"roles\": [\"read\"]}]",
          "listed twice");
  refused("[{\"name\": \"x\", \"key\": \"K1\", \"tenants\": [\"a\"], \"roles\": [\"read\"]},"
          " {\"name\": \"y\", \"key\": \"K1\", \"tenants\": [\"a\"], \"roles\": [\"read\"]}]",
          "entry 2 (\"y\"): its key is already listed by entry 1 (\"x\")");
  refused("[{\"name\": \"x\", \"key\": \"K1\", \"tenants\": [\"a\"], \"roles\": [\"read\"]},"
          " {\"name\": \"x\", \"key\": \"K2\", \"tenants\": [\"a\"], \"roles\": [\"read\"]}]",
          "entry 2: name \"x\" is already used by entry 1");
  refused("[{\"name\": \"x\", \"name\": \"y\"}]", "duplicate");
  refused("[", "c");
  /* A file others can rewrite grants nothing. */
  fq_err_t err;
  fq_err_clear(&err);
  const char *p = write_file("[]", 0622);
  CHECK(fq_clients_load(p, &err) == NULL);
  CHECK(strstr(err.msg, "writable by other users") != NULL);
  p = write_file("[]", 0664);
  CHECK(fq_clients_load(p, &err) == NULL);
  CHECK(strstr(err.msg, "writable by its group") != NULL);
  p = write_file("[]", 0644);
  fq_clients_t *c = fq_clients_load(p, &err);
  CHECK(c != NULL);
  fq_clients_free(&c);
  CHECK(fq_clients_load("/nonexistent/clients.json", &err) == NULL);
  CHECK(strstr(err.msg, "cannot open") != NULL);
  cleanup();
}

FQ_TEST(clients_narrowed) {
  keys();
  fq_err_t err;
  fq_clients_t *a = load("[{\"name\": \"x\", \"key\": \"K1\", \"tenants\": [\"a\", \"b\"], "
                         "\"roles\": [\"read\", \"subscribe\"]},"
                         " {\"name\": \"y\", \"key\": \"K2\", \"tenants\": [\"*\"], \"roles\": "
                         "[\"read\"]}]",
                         &err);
  fq_clients_t *same = load("[{\"name\": \"y\", \"key\": \"K2\", \"tenants\": [\"*\"], \"roles\": "
                            "[\"read\"]}, {\"name\": \"x2\", \"key\": \"K1\", \"tenants\": [\"b\", "
                            "\"a\", \"c\"], \"roles\": [\"subscribe\", \"read\", \"submit\"]},"
                            " {\"name\": \"z\", \"key\": \"K3\", \"tenants\": [\"*\"], \"roles\": "
                            "[\"read\"]}]",
                            &err);
  fq_clients_t *gone = load("[{\"name\": \"x\", \"key\": \"K1\", \"tenants\": [\"a\", \"b\"], "
                            "\"roles\": [\"read\", \"subscribe\"]}]",
                            &err);
  fq_clients_t *fewer_t = load("[{\"name\": \"x\", \"key\": \"K1\", \"tenants\": [\"a\"], "
                               "\"roles\": [\"read\", \"subscribe\"]},"
                               " {\"name\": \"y\", \"key\": \"K2\", \"tenants\": [\"*\"], "
                               "\"roles\": [\"read\"]}]",
                               &err);
  fq_clients_t *fewer_r = load("[{\"name\": \"x\", \"key\": \"K1\", \"tenants\": [\"a\", \"b\"], "
                               "\"roles\": [\"read\"]},"
                               " {\"name\": \"y\", \"key\": \"K2\", \"tenants\": [\"*\"], "
                               "\"roles\": [\"read\"]}]",
                               &err);
  fq_clients_t *star_gone = load("[{\"name\": \"x\", \"key\": \"K1\", \"tenants\": [\"a\", \"b\"], "
                                 "\"roles\": [\"read\", \"subscribe\"]},"
                                 " {\"name\": \"y\", \"key\": \"K2\", \"tenants\": [\"a\"], "
                                 "\"roles\": [\"read\"]}]",
                                 &err);
  CHECK(a && same && gone && fewer_t && fewer_r && star_gone);
  if (a && same && gone && fewer_t && fewer_r && star_gone) {
    CHECK(!fq_clients_narrowed(a, same));  /* only wider: names may change */
    CHECK(fq_clients_narrowed(a, gone));
    CHECK(fq_clients_narrowed(a, fewer_t));
    CHECK(fq_clients_narrowed(a, fewer_r));
    CHECK(fq_clients_narrowed(a, star_gone));
    CHECK(!fq_clients_narrowed(gone, a));
  }
  fq_clients_free(&a);
  fq_clients_free(&same);
  fq_clients_free(&gone);
  fq_clients_free(&fewer_t);
  fq_clients_free(&fewer_r);
  fq_clients_free(&star_gone);
  cleanup();
}

typedef struct got {
  char s[8][80];
  int n;
} got_t;

static void collect(void *ud, const char *p, size_t len) {
  got_t *g = ud;
  if (g->n < 8) snprintf(g->s[g->n++], 80, "%.*s", (int)len, p);
}

static got_t map(const fq_client_entry_t *e, const char *topic) {
  got_t g;
  memset(&g, 0, sizeof g);
  fq_client_map_subscription(e, topic, strlen(topic), collect, &g);
  return g;
}

FQ_TEST(clients_subscriptions_stay_inside_tenants) {
  keys();
  fq_err_t err;
  fq_clients_t *c = load("[{\"name\": \"x\", \"key\": \"K1\", \"tenants\": [\"acme\", \"acme.eu\"], "
                         "\"roles\": [\"subscribe\"]},"
                         " {\"name\": \"all\", \"key\": \"K2\", \"tenants\": [\"*\"], \"roles\": "
                         "[\"subscribe\"]},"
                         " {\"name\": \"nosub\", \"key\": \"K3\", \"tenants\": [\"acme\"], "
                         "\"roles\": [\"read\"]}]",
                         &err);
  CHECK(c != NULL);
  if (!c) {
    cleanup();
    return;
  }
  const fq_client_entry_t *x = fq_clients_find(c, k1, 40);
  const fq_client_entry_t *all = fq_clients_find(c, k2, 40);
  const fq_client_entry_t *nosub = fq_clients_find(c, k3, 40);
  got_t g = map(x, "");
  CHECK_INT(g.n, 2);
  CHECK_STR(g.s[0], "acme/");
  CHECK_STR(g.s[1], "acme.eu/");
  g = map(x, "acme");
  CHECK_INT(g.n, 2);
  g = map(x, "acme/");
  CHECK_INT(g.n, 1);
  CHECK_STR(g.s[0], "acme/");
  g = map(x, "acme/5YJ3E1EA7KF000001");
  CHECK_INT(g.n, 1);
  CHECK_STR(g.s[0], "acme/5YJ3E1EA7KF000001");
  g = map(x, "acme.");
  CHECK_INT(g.n, 1);
  CHECK_STR(g.s[0], "acme.eu/");
  g = map(x, "globex/");
  CHECK_INT(g.n, 0);
  g = map(x, "acmex");
  CHECK_INT(g.n, 0);
  g = map(all, "");
  CHECK_INT(g.n, 1);
  CHECK_STR(g.s[0], "");
  g = map(all, "globex/");
  CHECK_INT(g.n, 1);
  CHECK_STR(g.s[0], "globex/");
  g = map(nosub, "");
  CHECK_INT(g.n, 0);
  g = map(NULL, "");
  CHECK_INT(g.n, 0);
  fq_clients_free(&c);
  cleanup();
}
