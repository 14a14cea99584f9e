/*
 * fleetq health: ask fleetqd how its shards and accounts are (the `health`
 * op, proto/wire-protocol.md) and turn the answer into an exit status a
 * monitoring probe can use: 0 healthy, 1 unhealthy (a shard stuck or not
 * answering, storage near full, a store that cannot be read, an account
 * whose token refresh failed), 2 usage, 3 the daemon could not be reached.
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

/* Exit status when no answer came: distinct from an unhealthy answer, so
 * that a probe can tell "the daemon says it is in trouble" from "the
 * daemon is not there". */
#define HEALTH_UNREACHABLE 3

enum { H_STUCK = FQ_CLI_O_OWN };

static const fq_opt_t g_opts[] = {
    FQ_CLI_REQUEST_OPTS_HEAD,
    {"stuck-ms", 0, "MS", H_STUCK,
     "a shard with unfinished commands and no commit\nfor longer than MS is stuck (default 30000)"},
    FQ_CLI_REQUEST_OPTS_TAIL,
};

static const fq_cli_doc_t g_doc = {
    .usage = "fleetq health [--endpoint EP] [--stuck-ms MS] [--json] [--timeout S]\n"
             "                     [--curve-key FILE --server-key Z85]",
    .about =
        "Ask the daemon how it is: per shard whether a read transaction works, the\n"
        "commands not yet finished, the age of the oldest, the time since the last\n"
        "commit that stored or moved a command, and how full the store's map is;\n"
        "and the accounts whose token refresh failed.  Prints one line per shard,\n"
        "then the problems.  A shard that does not answer within 2 s (or MS, when\n"
        "shorter) is stuck; so is one with unfinished commands and no commit for\n"
        "more than MS; a shard is near full when the next new command would get\n"
        "storage_full and its map cannot grow.  Needs the \"read\" or \"admin\" role\n"
        "with CURVE.\n",
    .notes = FQ_CLI_CURVE_NOTE,
    .exit = "0 healthy, 1 unhealthy (a shard stuck or not answering, storage near\n"
            "full, a store that cannot be read, an account whose token refresh failed;\n"
            "or the daemon refused the request), 2 usage error, 3 the daemon could not\n"
            "be reached (no answer within --timeout).",
};

static int pk_write(void *data, const char *p, size_t n) {
  return fq_buf_append(data, p, n) ? -1 : 0;
}

static int build_request(fq_buf_t *out, int64_t stuck_ms) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, out, pk_write);
  int rc = msgpack_pack_map(&pk, 2);
  rc |= msgpack_pack_str_with_body(&pk, "op", 2) | msgpack_pack_str_with_body(&pk, "health", 6);
  rc |= msgpack_pack_str_with_body(&pk, "stuck_ms", 8) | msgpack_pack_int64(&pk, stuck_ms);
  return rc;
}

/* "-" for nil, else the integer. */
static void put_int(const msgpack_object *o, const char *unit) {
  int64_t v;
  if (o && fq_mp_int(o, &v)) printf("%" PRId64 "%s", v, unit);
  else printf("-");
}

static void print_text(const msgpack_object *root, bool healthy) {
  const msgpack_object *shards = fq_mp_get(root, "shards");
  if (shards && shards->type == MSGPACK_OBJECT_ARRAY) {
    for (uint32_t i = 0; i < shards->via.array.size; i++) {
      const msgpack_object *s = &shards->via.array.ptr[i];
      const char *read = "?";
      size_t rn = 1;
      fq_mp_str(fq_mp_get(s, "read"), &read, &rn);
      printf("shard ");
      put_int(fq_mp_get(s, "shard"), "");
      printf(": read %.*s, queued ", (int)rn, read);
      put_int(fq_mp_get(s, "queued"), "");
      printf(", oldest queued ");
      put_int(fq_mp_get(s, "oldest_queued_age_ms"), " ms");
      printf(", last commit ");
      put_int(fq_mp_get(s, "last_commit_age_ms"), " ms ago");
      const msgpack_object *r = fq_mp_get(s, "map_used_ratio");
      const msgpack_object *hw = fq_mp_get(s, "map_high_water_ratio");
      if (r && r->type == MSGPACK_OBJECT_FLOAT64 && hw && hw->type == MSGPACK_OBJECT_FLOAT64)
        printf(", map %.1f%% used (high-water %.0f%%)", r->via.f64 * 100, hw->via.f64 * 100);
      bool stuck = false, full = false;
      fq_mp_bool(fq_mp_get(s, "stuck"), &stuck);
      fq_mp_bool(fq_mp_get(s, "near_full"), &full);
      const char *owner = NULL;
      size_t on = 0;
      bool here = false;
      if (fq_mp_get(s, "served_here") && fq_mp_bool(fq_mp_get(s, "served_here"), &here)) {
        /* Cluster mode: where the shard lives. */
        if (here) printf(", owner: this node");
        else if (fq_mp_str(fq_mp_get(s, "owner"), &owner, &on))
          printf(", owner: node %.*s (standby here)", (int)on, owner);
        else printf(", owner: none (moving)");
      }
      printf("%s%s\n", stuck ? ", STUCK" : "", full ? ", NEAR FULL" : "");
    }
  }
  const msgpack_object *probs = fq_mp_get(root, "problems");
  if (probs && probs->type == MSGPACK_OBJECT_ARRAY)
    for (uint32_t i = 0; i < probs->via.array.size; i++) {
      const char *p;
      size_t n;
      if (fq_mp_str(&probs->via.array.ptr[i], &p, &n)) printf("problem: %.*s\n", (int)n, p);
    }
  printf("%s\n", healthy ? "healthy" : "UNHEALTHY");
}

/* --stuck-ms into *(int64_t *)ctx. */
static int own_opt(void *ctx, const char *prog, int id, const char *v) {
  if (id != H_STUCK) return -1;
  char *end = NULL;
  errno = 0;
  int64_t ms = strtoll(v, &end, 10);
  if (errno || !end || *end || ms < 1 || ms > FQ_WIRE_MAX_TTL_MS)
    return fq_opt_usage_error(prog, "--stuck-ms wants 1..%d, got '%s'", FQ_WIRE_MAX_TTL_MS, v);
  *(int64_t *)ctx = ms;
  return 0;
}

static int cmd_health(int argc, char **argv) {
  const char *prog = "fleetq health";
  fq_client_opts_t co = {0};
  int64_t stuck_ms = FQ_WIRE_DEFAULT_STUCK_MS;
  bool json = false;
  int crc = fq_cli_request_opts("health", g_opts, &g_doc, argc, argv, &co, &json, own_opt,
                                &stuck_ms);
  if (crc >= 0) return crc;

  int rc = 1;
  fq_buf_t req, raw;
  fq_msg_t m;
  fq_buf_init(&req, 256);
  fq_buf_init(&raw, FQ_CLIENT_MAX_REPLY);
  if (build_request(&req, stuck_ms) != 0) {
    fprintf(stderr, "%s: out of memory\n", prog);
    goto out;
  }
  int arc = fq_cli_ask(prog, &co, &req, &raw, &m);
  if (arc != FQ_CLI_ASK_OK) {
    rc = arc == FQ_CLI_ASK_UNREACHABLE ? HEALTH_UNREACHABLE : 1;
    goto out;
  }
  bool healthy = false;
  fq_mp_bool(fq_mp_get(m.root, "healthy"), &healthy);
  if (json)
    fq_cli_print_json(&raw);
  else
    print_text(m.root, healthy);
  fq_msg_free(&m);
  rc = healthy ? 0 : 1;
out:
  fq_buf_free(&req);
  fq_buf_free(&raw);
  return rc;
}

FQ_CLI_COMMAND("health", cmd_health, "check the daemon's shards, storage and accounts")
