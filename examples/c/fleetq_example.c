/*
 * A small fleetq client built against the installed libfleetq-client:
 * ping the daemon, submit one command, read it back with get.
 *
 *   cc fleetq_example.c $(pkg-config --cflags --libs fleetq) -o fleetq-example
 *   ./fleetq-example tcp://127.0.0.1:5555 acme order-1 alice 5YJ3E1EA7KF000001 \
 *       set_charge_limit percent=80
 *
 * Arguments: ENDPOINT TENANT KEY ACCOUNT VIN COMMAND [NAME=VALUE ...].
 * For a fleetqd with CURVE, set FLEETQ_CURVE_KEY (this client's key file)
 * and FLEETQ_SERVER_KEY (the daemon's public key).  Exit status: 0 when
 * the daemon answered all three, 1 when it refused or did not answer, 2
 * for bad arguments.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <fleetq/client.h>

/* Send one request, decode the reply into m; 0 when it says ok: true. */
static int call(fq_client_t *c, const char *what, const fq_buf_t *req, fq_buf_t *raw,
                fq_msg_t *m) {
  fq_err_t e;
  int rc = fq_client_request(c, req->data, req->len, raw, &e);
  if (rc) {
    fprintf(stderr, "fleetq-example: %s: %s: %s\n", what, fq_errname(rc), e.msg);
    return 1;
  }
  if (fq_msg_decode(m, raw->data, raw->len, &e)) {
    fprintf(stderr, "fleetq-example: %s: bad reply: %s\n", what, e.msg);
    return 1;
  }
  bool ok = false;
  if (!fq_mp_bool(fq_mp_get(m->root, "ok"), &ok) || !ok) {
    const char *code = "?", *msg = "";
    size_t cn = 1, mn = 0;
    fq_mp_str(fq_mp_get(m->root, "error"), &code, &cn);
    fq_mp_str(fq_mp_get(m->root, "message"), &msg, &mn);
    fprintf(stderr, "fleetq-example: %s: %.*s: %.*s\n", what, (int)cn, code, (int)mn, msg);
    fq_msg_free(m);
    return 1;
  }
  return 0;
}

/* A string field of a reply, for printing ("-" when absent). */
static int field(const msgpack_object *map, const char *key, const char **p) {
  size_t n = 0;
  if (!fq_mp_str(fq_mp_get(map, key), p, &n)) {
    *p = "-";
    n = 1;
  }
  return (int)n;
}

int main(int argc, char **argv) {
  if (argc < 7) {
    fprintf(stderr, "usage: fleetq-example ENDPOINT TENANT KEY ACCOUNT VIN COMMAND "
                    "[NAME=VALUE ...]\n");
    return 2;
  }
  fq_pval_t params[FQ_MAX_PARAMS];
  size_t np = 0;
  fq_err_t e;
  for (int i = 7; i < argc; i++) {
    if (np == FQ_MAX_PARAMS || fq_param_parse(argv[i], &params[np], &e)) {
      fprintf(stderr, "fleetq-example: parameter '%s': %s\n", argv[i],
              np == FQ_MAX_PARAMS ? "too many" : e.msg);
      return 2;
    }
    np++;
  }
  fq_client_opts_t o = {.endpoint = argv[1], .timeout_ms = 5000};
  if (fq_client_opts_resolve(&o, &e)) { /* CURVE from the environment, checked */
    fprintf(stderr, "fleetq-example: %s\n", e.msg);
    return 2;
  }
  fq_client_t *c = fq_client_new_opts(&o, &e);
  if (!c) {
    fprintf(stderr, "fleetq-example: %s\n", e.msg);
    return 1;
  }
  int rc = 1;
  fq_buf_t req, raw;
  fq_msg_t m;
  fq_buf_init(&req, 64 * 1024);
  fq_buf_init(&raw, FQ_CLIENT_MAX_REPLY);

  /* ping: the daemon's version and shard count. */
  if (fq_req_ping(&req, false, 0) || call(c, "ping", &req, &raw, &m)) goto out;
  const char *ver;
  int vn = field(m.root, "version", &ver);
  int64_t shards = 0;
  fq_mp_int(fq_mp_get(m.root, "shards"), &shards);
  printf("ping: fleetqd %.*s, %" PRId64 " shard(s)\n", vn, ver, shards);
  fq_msg_free(&m);

  /* submit: acknowledged once the command is on disk. */
  fq_submit_args_t a = {.tenant = argv[2], .key = argv[3], .account = argv[4], .vin = argv[5],
                        .command = argv[6], .params = params, .nparams = np};
  fq_buf_reset(&req);
  if (fq_req_submit(&req, &a) || call(c, "submit", &req, &raw, &m)) goto out;
  char id[64];
  const char *idp, *state;
  int in = field(m.root, "id", &idp), sn = field(m.root, "state", &state);
  bool dup = false;
  fq_mp_bool(fq_mp_get(m.root, "dup"), &dup);
  snprintf(id, sizeof id, "%.*s", in, idp);
  printf("submit: %s %s (%.*s)\n", dup ? "duplicate" : "accepted", id, sn, state);
  fq_msg_free(&m);

  /* get: the stored command by its id. */
  fq_buf_reset(&req);
  if (fq_req_lookup(&req, "get", id, NULL, NULL, false, 0) || call(c, "get", &req, &raw, &m))
    goto out;
  const msgpack_object *cmd = fq_mp_get(m.root, "command");
  const char *name, *vin;
  int cn = field(cmd, "command", &name), vinn = field(cmd, "vin", &vin);
  sn = field(cmd, "state", &state);
  printf("get: %s %.*s on %.*s is %.*s\n", id, cn, name, vinn, vin, sn, state);
  fq_msg_free(&m);
  rc = 0;
out:
  fq_buf_free(&req);
  fq_buf_free(&raw);
  fq_client_destroy(&c);
  return rc;
}
