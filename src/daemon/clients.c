/*
 * The clients file: loading, validation and look-ups.  See clients.h.
 */
#include "clients.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "curvekey.h"
#include "util.h"

struct fq_clients {
  size_t n;
  fq_client_entry_t *e;  /* sorted by key, for fq_clients_find */
  size_t nbudgets;
  fq_budget_limit_t *budgets;
};

static const struct {
  const char *name;
  unsigned bit;
} roles[] = {{"submit", FQ_ROLE_SUBMIT},
             {"read", FQ_ROLE_READ},
             {"cancel", FQ_ROLE_CANCEL},
             {"subscribe", FQ_ROLE_SUBSCRIBE},
             {"admin", FQ_ROLE_ADMIN}};
#define NROLES (sizeof roles / sizeof roles[0])

static void entry_free(fq_client_entry_t *e) {
  for (size_t i = 0; i < e->ntenants; i++) free(e->tenants[i]);
  free(e->tenants);
  free(e->acl);
}

void fq_clients_free(fq_clients_t **cp) {
  if (!cp || !*cp) return;
  fq_clients_t *c = *cp;
  for (size_t i = 0; i < c->n; i++) entry_free(&c->e[i]);
  free(c->e);
  free(c->budgets);
  free(c);
  *cp = NULL;
}

size_t fq_clients_count(const fq_clients_t *c) { return c ? c->n : 0; }

const fq_budget_limit_t *fq_clients_budgets(const fq_clients_t *c, size_t *n) {
  *n = c ? c->nbudgets : 0;
  return c ? c->budgets : NULL;
}

const fq_client_entry_t *fq_clients_at(const fq_clients_t *c, size_t i) {
  return c && i < c->n ? &c->e[i] : NULL;
}

/* The wire protocol's tenant rule: 1-64 of [A-Za-z0-9._-]. */
static bool tenant_ok(const char *t) {
  size_t n = strlen(t);
  if (n == 0 || n > 64) return false;
  for (size_t i = 0; i < n; i++) {
    char ch = t[i];
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-';
    if (!ok) return false;
  }
  return true;
}

static bool name_ok(const char *s) { return strlen(s) <= FQ_CLIENT_NAME_MAX && tenant_ok(s); }

/* "entry 3 (\"billing-svc\")" or "entry 3" before the name is known. */
static void entry_label(char *out, size_t cap, size_t idx, const char *name) {
  if (name && *name)
    snprintf(out, cap, "entry %zu (\"%s\")", idx + 1, name);
  else
    snprintf(out, cap, "entry %zu", idx + 1);
}

static int load_tenants(fq_client_entry_t *e, json_t *arr, const char *path, const char *lbl,
                        fq_err_t *err) {
  if (!json_is_array(arr) || json_array_size(arr) == 0)
    return fq_errf(err, FQ_ECONFIG, "%s: %s: \"tenants\" must be a non-empty array of strings",
                   path, lbl);
  size_t n = json_array_size(arr);
  if (!(e->tenants = calloc(n, sizeof *e->tenants))) return fq_errf(err, -ENOMEM, "out of memory");
  size_t acl_cap = 0;
  for (size_t i = 0; i < n; i++) {
    json_t *t = json_array_get(arr, i);
    if (!json_is_string(t))
      return fq_errf(err, FQ_ECONFIG, "%s: %s: \"tenants\"[%zu] is not a string", path, lbl, i);
    const char *s = json_string_value(t);
    if (!strcmp(s, "*")) {
      if (n != 1)
        return fq_errf(err, FQ_ECONFIG,
                       "%s: %s: \"tenants\": \"*\" (every tenant) must be the only entry", path,
                       lbl);
      e->all_tenants = true;
      return 0;
    }
    if (!tenant_ok(s))
      return fq_errf(err, FQ_ECONFIG,
                     "%s: %s: \"tenants\"[%zu] \"%.80s\" is not a tenant name (1-64 characters "
                     "of A-Z a-z 0-9 . _ -) nor \"*\"; patterns other than \"*\" are not supported",
                     path, lbl, i, s);
    for (size_t j = 0; j < e->ntenants; j++)
      if (!strcmp(e->tenants[j], s))
        return fq_errf(err, FQ_ECONFIG, "%s: %s: \"tenants\": \"%s\" is listed twice", path, lbl,
                       s);
    if (!(e->tenants[e->ntenants] = strdup(s))) return fq_errf(err, -ENOMEM, "out of memory");
    e->ntenants++;
    acl_cap += strlen(s) + 1;
  }
  if (!(e->acl = malloc(acl_cap))) return fq_errf(err, -ENOMEM, "out of memory");
  for (size_t i = 0; i < e->ntenants; i++) {
    size_t l = strlen(e->tenants[i]) + 1;
    memcpy(e->acl + e->acl_len, e->tenants[i], l);
    e->acl_len += l;
  }
  return 0;
}

static int load_roles(fq_client_entry_t *e, json_t *arr, const char *path, const char *lbl,
                      fq_err_t *err) {
  if (!json_is_array(arr) || json_array_size(arr) == 0)
    return fq_errf(err, FQ_ECONFIG,
                   "%s: %s: \"roles\" must be a non-empty array of submit, read, cancel, "
                   "subscribe, admin",
                   path, lbl);
  for (size_t i = 0; i < json_array_size(arr); i++) {
    json_t *r = json_array_get(arr, i);
    const char *s = json_is_string(r) ? json_string_value(r) : NULL;
    unsigned bit = 0;
    for (size_t k = 0; s && k < NROLES; k++)
      if (!strcmp(s, roles[k].name)) bit = roles[k].bit;
    if (!bit)
      return fq_errf(err, FQ_ECONFIG,
                     "%s: %s: \"roles\"[%zu]%s%.40s%s is not a role (submit, read, cancel, "
                     "subscribe, admin)",
                     path, lbl, i, s ? " \"" : "", s ? s : "", s ? "\"" : "");
    e->roles |= bit;
  }
  return 0;
}

static int load_entry(fq_client_entry_t *e, json_t *o, size_t idx, const char *path,
                      fq_err_t *err) {
  char lbl[128];
  entry_label(lbl, sizeof lbl, idx, NULL);
  if (!json_is_object(o))
    return fq_errf(err, FQ_ECONFIG, "%s: %s: expected an object with name, key, tenants, roles",
                   path, lbl);
  json_t *name = json_object_get(o, "name");
  if (!json_is_string(name) || !name_ok(json_string_value(name)))
    return fq_errf(err, FQ_ECONFIG,
                   "%s: %s: \"name\" is required: 1-64 characters of A-Z a-z 0-9 . _ -", path,
                   lbl);
  snprintf(e->name, sizeof e->name, "%s", json_string_value(name));
  entry_label(lbl, sizeof lbl, idx, e->name);
  const char *k;
  json_t *v;
  json_object_foreach(o, k, v) {
    if (strcmp(k, "name") && strcmp(k, "key") && strcmp(k, "tenants") && strcmp(k, "roles"))
      return fq_errf(err, FQ_ECONFIG,
                     "%s: %s: unknown key \"%.40s\" (an entry has name, key, tenants, roles)",
                     path, lbl, k);
  }
  json_t *key = json_object_get(o, "key");
  if (!json_is_string(key))
    return fq_errf(err, FQ_ECONFIG, "%s: %s: \"key\" is required: the client's Z85 public key",
                   path, lbl);
  if (!fq_curve_key_valid(json_string_value(key)))
    return fq_errf(err, FQ_ECONFIG,
                   "%s: %s: \"key\" is not a CURVE public key (40 Z85 characters, as printed by "
                   "`fleetq curve-keygen`)",
                   path, lbl);
  snprintf(e->key, sizeof e->key, "%s", json_string_value(key));
  if (!json_object_get(o, "tenants"))
    return fq_errf(err, FQ_ECONFIG, "%s: %s: \"tenants\" is required", path, lbl);
  if (!json_object_get(o, "roles"))
    return fq_errf(err, FQ_ECONFIG, "%s: %s: \"roles\" is required", path, lbl);
  int rc = load_tenants(e, json_object_get(o, "tenants"), path, lbl, err);
  if (rc == 0) rc = load_roles(e, json_object_get(o, "roles"), path, lbl, err);
  return rc;
}

static int by_key(const void *a, const void *b) {
  return memcmp(((const fq_client_entry_t *)a)->key, ((const fq_client_entry_t *)b)->key, 40);
}

/* The file grants access: refuse one that others could rewrite. */
static int check_file(const char *path, json_t **root, fq_err_t *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0)
    return fq_errf(err, FQ_ECONFIG, "%s: cannot open: %s%s", path, fq_strerror(-errno),
                   errno == ELOOP ? " (a symbolic link; give the real path)" : "");
  struct stat st;
  int rc = 0;
  if (fstat(fd, &st) != 0) {
    rc = fq_errf(err, FQ_ECONFIG, "%s: cannot stat: %s", path, fq_strerror(-errno));
  } else if (!S_ISREG(st.st_mode)) {
    rc = fq_errf(err, FQ_ECONFIG, "%s: not a regular file", path);
  } else if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    rc = fq_errf(err, FQ_ECONFIG,
                 "%s: writable by %s, who could grant themselves access: chmod go-w %s", path,
                 (st.st_mode & S_IWOTH) ? "other users" : "its group", path);
  } else {
    json_error_t je;
    FILE *f = fdopen(fd, "r");
    if (!f) {
      rc = fq_errf(err, FQ_ECONFIG, "%s: %s", path, fq_strerror(-errno));
    } else {
      fd = -1;
      *root = json_loadf(f, JSON_REJECT_DUPLICATES, &je);
      fclose(f);
      if (!*root) rc = fq_errf(err, FQ_ECONFIG, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    }
  }
  if (fd >= 0) close(fd);
  return rc;
}

fq_clients_t *fq_clients_load(const char *path, fq_err_t *err) {
  json_t *root = NULL;
  if (check_file(path, &root, err) != 0) return NULL;
  fq_clients_t *c = calloc(1, sizeof *c);
  int rc = 0;
  if (!c) {
    fq_errf(err, -ENOMEM, "out of memory");
    goto fail;
  }
  /* Either the array of entries, or an object holding it under "clients"
   * and the tenants' budgets under "budgets" (budget.h). */
  json_t *list = root;
  if (json_is_object(root)) {
    const char *k;
    json_t *x;
    json_object_foreach(root, k, x) {
      if (strcmp(k, "clients") != 0 && strcmp(k, "budgets") != 0) {
        rc = fq_errf(err, FQ_ECONFIG, "%s: unknown key \"%.64s\" (clients, budgets)", path, k);
        goto fail;
      }
    }
    list = json_object_get(root, "clients");
    if (!list) {
      rc = fq_errf(err, FQ_ECONFIG, "%s: \"clients\": required (the array of client entries)",
                   path);
      goto fail;
    }
    json_t *b = json_object_get(root, "budgets");
    if (b) {
      char what[1100];
      snprintf(what, sizeof what, "%s: ", path);
      if (!(c->budgets = calloc(FQ_BUDGETS_MAX, sizeof *c->budgets))) {
        fq_errf(err, -ENOMEM, "out of memory");
        goto fail;
      }
      if ((rc = fq_budget_parse(b, what, c->budgets, &c->nbudgets, err)) != 0) goto fail;
    }
  }
  if (!json_is_array(list)) {
    rc = fq_errf(err, FQ_ECONFIG, "%s: expected a JSON array of client entries", path);
    goto fail;
  }
  size_t n = json_array_size(list);
  if (n && !(c->e = calloc(n, sizeof *c->e))) {
    fq_errf(err, -ENOMEM, "out of memory");
    goto fail;
  }
  for (size_t i = 0; i < n; i++) {
    c->n = i + 1;
    if ((rc = load_entry(&c->e[i], json_array_get(list, i), i, path, err)) != 0) goto fail;
    for (size_t j = 0; j < i; j++) {
      if (!strcmp(c->e[j].name, c->e[i].name)) {
        fq_errf(err, FQ_ECONFIG, "%s: entry %zu: name \"%s\" is already used by entry %zu", path,
                i + 1, c->e[i].name, j + 1);
        goto fail;
      }
      if (!strcmp(c->e[j].key, c->e[i].key)) {
        fq_errf(err, FQ_ECONFIG, "%s: entry %zu (\"%s\"): its key is already listed by entry %zu (\"%s\")",
                path, i + 1, c->e[i].name, j + 1, c->e[j].name);
        goto fail;
      }
    }
  }
  if (c->n) qsort(c->e, c->n, sizeof *c->e, by_key);
  json_decref(root);
  return c;
fail:
  json_decref(root);
  fq_clients_free(&c);
  return NULL;
}

const fq_client_entry_t *fq_clients_find(const fq_clients_t *c, const char *key, size_t len) {
  if (!c || len != 40) return NULL;
  size_t lo = 0, hi = c->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int d = memcmp(c->e[mid].key, key, 40);
    if (d == 0) return &c->e[mid];
    if (d < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

bool fq_client_has_tenant(const fq_client_entry_t *e, const char *t, size_t n) {
  if (!e) return false;
  if (e->all_tenants) return true;
  for (size_t i = 0; i < e->ntenants; i++)
    if (strlen(e->tenants[i]) == n && memcmp(e->tenants[i], t, n) == 0) return true;
  return false;
}

void fq_client_roles_str(unsigned bits, char *out, size_t cap) {
  size_t len = 0;
  if (cap) out[0] = 0;
  for (size_t k = 0; k < NROLES; k++) {
    if (!(bits & roles[k].bit)) continue;
    int w = snprintf(out + len, cap > len ? cap - len : 0, "%s%s", len ? "," : "", roles[k].name);
    if (w > 0) len += (size_t)w;
    if (len >= cap) break;
  }
}

bool fq_clients_narrowed(const fq_clients_t *old, const fq_clients_t *neu) {
  for (size_t i = 0; old && i < old->n; i++) {
    const fq_client_entry_t *o = &old->e[i];
    const fq_client_entry_t *n = fq_clients_find(neu, o->key, 40);
    if (!n) return true;
    if (o->roles & ~n->roles) return true;
    if (n->all_tenants) continue;
    if (o->all_tenants) return true;
    for (size_t t = 0; t < o->ntenants; t++)
      if (!fq_client_has_tenant(n, o->tenants[t], strlen(o->tenants[t]))) return true;
  }
  return false;
}

void fq_client_map_subscription(const fq_client_entry_t *e, const char *topic, size_t len,
                                fq_client_prefix_fn fn, void *ud) {
  if (!e || !(e->roles & FQ_ROLE_SUBSCRIBE)) return;
  if (e->all_tenants) {
    fn(ud, topic, len);
    return;
  }
  for (size_t i = 0; i < e->ntenants; i++) {
    char prefix[66];
    size_t tl = strlen(e->tenants[i]);
    memcpy(prefix, e->tenants[i], tl);
    prefix[tl++] = '/';
    if (len >= tl && memcmp(topic, prefix, tl) == 0) {
      /* Inside this tenant: a topic starts with exactly one tenant, so no
       * other tenant can match too. */
      fn(ud, topic, len);
      return;
    }
    if (len < tl && memcmp(prefix, topic, len) == 0) fn(ud, prefix, tl);
  }
}
