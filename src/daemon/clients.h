/*
 * The clients file: who may talk to fleetqd when CURVE is on, and what each
 * client key may do.  A JSON array, one entry per client key:
 *
 *   [{"name": "billing-svc", "key": "<Z85 public key>",
 *     "tenants": ["acme"], "roles": ["submit", "read", "cancel", "subscribe"]}]
 *
 * Roles: submit, read (get and history), cancel, subscribe (status events),
 * admin (account management).  Tenants: tenant names (the wire protocol's
 * tenant rule), or ["*"] alone for every tenant.  Every mistake (not an
 * array, an unknown key in an entry, a missing key, a bad Z85 key, an
 * unknown role, a bad tenant pattern, a key or name listed twice) is an
 * error naming the entry, so a typo never grants or drops access quietly.
 *
 * The file may also be an object, {"clients": [<entries>], "budgets":
 * {...}}, the budgets being per tenant as in the config file (budget.h):
 * where both name a tenant, the clients file's limits win.
 *
 * The file grants access, so it must not be writable by group or others
 * (like sshd's authorized_keys under StrictModes).
 *
 * The table is immutable once loaded: a reload builds a new one and the
 * ingress swaps it in.
 */
#ifndef FQ_CLIENTS_H
#define FQ_CLIENTS_H

#include <stdbool.h>
#include <stddef.h>

#include "budget.h"
#include "fleetq/error.h"

enum {
  FQ_ROLE_SUBMIT = 1 << 0,
  FQ_ROLE_READ = 1 << 1,
  FQ_ROLE_CANCEL = 1 << 2,
  FQ_ROLE_SUBSCRIBE = 1 << 3,
  FQ_ROLE_ADMIN = 1 << 4,
};

#define FQ_CLIENT_NAME_MAX 64

typedef struct fq_client_entry {
  char name[FQ_CLIENT_NAME_MAX + 1];
  char key[41];          /* Z85 public key */
  unsigned roles;        /* FQ_ROLE_* bits */
  bool all_tenants;      /* "tenants": ["*"] */
  size_t ntenants;
  char **tenants;
  /* The tenant list as the shard framing carries it (shard.h): each name
   * followed by one NUL byte; empty when all_tenants. */
  char *acl;
  size_t acl_len;
} fq_client_entry_t;

typedef struct fq_clients fq_clients_t;

/* Load and validate path.  Returns NULL with err (FQ_ECONFIG) naming the
 * file, the entry (index and name when known) and the mistake. */
fq_clients_t *fq_clients_load(const char *path, fq_err_t *err);
void fq_clients_free(fq_clients_t **c);

size_t fq_clients_count(const fq_clients_t *c);

/* The file's "budgets" (none for the array form): *n of them. */
const fq_budget_limit_t *fq_clients_budgets(const fq_clients_t *c, size_t *n);
const fq_client_entry_t *fq_clients_at(const fq_clients_t *c, size_t i);

/* The entry of a Z85 public key (40 characters, not NUL-terminated needed),
 * or NULL when the key is not listed. */
const fq_client_entry_t *fq_clients_find(const fq_clients_t *c, const char *key, size_t len);

/* Whether the entry may act for tenant t[0..n). */
bool fq_client_has_tenant(const fq_client_entry_t *e, const char *t, size_t n);

/* Comma-separated role names of a bit set ("submit,read"), into out. */
void fq_client_roles_str(unsigned roles, char *out, size_t cap);

/* True when some key of `old` can do less under `neu`: removed, a role
 * taken away, or a tenant taken away.  Subscriptions made under the old
 * table must then be dropped. */
bool fq_clients_narrowed(const fq_clients_t *old, const fq_clients_t *neu);

/* Map a status-stream subscription (a topic prefix) of entry e to the
 * prefixes it may actually receive: the prefix itself when it lies inside
 * one of e's tenants ("acme/VIN" for tenant acme), "<tenant>/" for each
 * tenant the prefix covers ("" or "ac" cover tenant acme), nothing
 * otherwise.  fn is called once per prefix to apply. */
typedef void (*fq_client_prefix_fn)(void *ud, const char *prefix, size_t len);
void fq_client_map_subscription(const fq_client_entry_t *e, const char *topic, size_t len,
                                fq_client_prefix_fn fn, void *ud);

#endif
