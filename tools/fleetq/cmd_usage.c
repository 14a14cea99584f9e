/*
 * fleetq usage: the per-day Fleet API counts that the tenants' budgets are
 * checked against (the `usage` op, proto/wire-protocol.md; issue 16), per
 * UTC day, tenant and account.
 */
#include <errno.h>
#include <inttypes.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fleetq/client.h"
#include "fleetq/wire.h"

enum { U_TENANT = FQ_CLI_O_OWN, U_DAYS };

static const fq_opt_t g_opts[] = {
    FQ_CLI_REQUEST_OPTS_HEAD,
    {"tenant", 0, "T", U_TENANT, "only this tenant's counts"},
    {"days", 0, "N", U_DAYS, "the last N UTC days, today included (1..90,\ndefault 7)"},
    FQ_CLI_REQUEST_OPTS_TAIL,
};

static const fq_cli_doc_t g_doc = {
    .usage = "fleetq usage [--endpoint EP] [--tenant T] [--days N] [--json] [--timeout S]\n"
             "                    [--curve-key FILE --server-key Z85]",
    .about =
        "Show the Fleet API requests each tenant's commands used, per UTC day and\n"
        "account: \"billable\" counts every answer below 500 but those to wake_up,\n"
        "\"wakeups\" the wake_up answers.  The daily budgets of the config file\n"
        "(\"budgets\", docs/configuration.md) are checked against these counts.\n"
        "One line per day, tenant and account, oldest day first.  Needs the\n"
        "\"admin\" role with CURVE, or \"read\" with --tenant naming one of its\n"
        "tenants.\n",
    .notes = FQ_CLI_CURVE_NOTE,
    .exit = "0 answered, 1 the daemon refused the request or could not be reached,\n"
            "2 usage error.",
};

static int pk_write(void *data, const char *p, size_t n) {
  return fq_buf_append(data, p, n) ? -1 : 0;
}

static int build_request(fq_buf_t *out, const char *tenant, long days) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, out, pk_write);
  int rc = msgpack_pack_map(&pk, tenant ? 3 : 2);
  rc |= msgpack_pack_str_with_body(&pk, "op", 2) | msgpack_pack_str_with_body(&pk, "usage", 5);
  rc |= msgpack_pack_str_with_body(&pk, "days", 4) | msgpack_pack_int64(&pk, days);
  if (tenant)
    rc |= msgpack_pack_str_with_body(&pk, "tenant", 6) |
          msgpack_pack_str_with_body(&pk, tenant, strlen(tenant));
  return rc;
}

static void print_text(const msgpack_object *root) {
  const msgpack_object *rows = fq_mp_get(root, "usage");
  printf("%-10s  %-20s  %-24s  %10s  %8s\n", "DATE", "TENANT", "ACCOUNT", "BILLABLE", "WAKEUPS");
  if (!rows || rows->type != MSGPACK_OBJECT_ARRAY) return;
  for (uint32_t i = 0; i < rows->via.array.size; i++) {
    const msgpack_object *r = &rows->via.array.ptr[i];
    const char *d = "", *t = "", *a = "";
    size_t dn = 0, tn = 0, an = 0;
    int64_t b = 0, w = 0;
    fq_mp_str(fq_mp_get(r, "date"), &d, &dn);
    fq_mp_str(fq_mp_get(r, "tenant"), &t, &tn);
    fq_mp_str(fq_mp_get(r, "account"), &a, &an);
    fq_mp_int(fq_mp_get(r, "billable"), &b);
    fq_mp_int(fq_mp_get(r, "wakeups"), &w);
    printf("%-10.*s  %-20.*s  %-24.*s  %10" PRId64 "  %8" PRId64 "\n", (int)dn, d, (int)tn, t,
           (int)an, a, b, w);
  }
}

typedef struct {
  const char *tenant;
  long days;
} uopts_t;

/* --tenant and --days into the uopts_t at ctx. */
static int own_opt(void *ctx, const char *prog, int id, const char *v) {
  uopts_t *u = ctx;
  char *end = NULL;
  switch (id) {
  case U_TENANT:
    if (!v[0] || strlen(v) > 64)
      return fq_opt_usage_error(prog, "--tenant wants 1-64 characters, got '%s'", v);
    u->tenant = v;
    return 0;
  case U_DAYS:
    errno = 0;
    u->days = strtol(v, &end, 10);
    if (errno || !end || *end || u->days < 1 || u->days > FQ_WIRE_MAX_USAGE_DAYS)
      return fq_opt_usage_error(prog, "--days wants 1..%d, got '%s'", FQ_WIRE_MAX_USAGE_DAYS, v);
    return 0;
  default: return -1;
  }
}

static int cmd_usage(int argc, char **argv) {
  const char *prog = "fleetq usage";
  fq_client_opts_t co = {0};
  uopts_t u = {.tenant = NULL, .days = 7};
  bool json = false;
  int crc = fq_cli_request_opts("usage", g_opts, &g_doc, argc, argv, &co, &json, own_opt, &u);
  if (crc >= 0) return crc;

  int rc = 1;
  fq_buf_t req, raw;
  fq_msg_t m;
  fq_buf_init(&req, 256);
  fq_buf_init(&raw, FQ_CLIENT_MAX_REPLY);
  if (build_request(&req, u.tenant, u.days) != 0) {
    fprintf(stderr, "%s: out of memory\n", prog);
    goto out;
  }
  if (fq_cli_ask(prog, &co, &req, &raw, &m) != FQ_CLI_ASK_OK) goto out;
  if (json)
    fq_cli_print_json(&raw);
  else
    print_text(m.root);
  fq_msg_free(&m);
  rc = 0;
out:
  fq_buf_free(&req);
  fq_buf_free(&raw);
  return rc;
}

FQ_CLI_COMMAND("usage", cmd_usage, "per-day Fleet API counts per tenant and account (budgets)")
