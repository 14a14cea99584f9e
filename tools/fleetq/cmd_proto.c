/*
 * fleetq proto: offline tools for the Vehicle Command Protocol.
 *   proto sign    sign one command with a given session info, print the
 *                 RoutableMessage as hex (debugging, test vectors);
 *   proto decode  print any RoutableMessage (and its payload, session info
 *                 or fault) as readable JSON.
 * Nothing here talks to the network.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "fleetq/commands.h"
#include "fleetq/error.h"
#include "payload.h"
#include "util.h"
#include "vcp.h"

#define HEX_MAX (2 * FQ_VCP_MAX_MSG + 2)

enum {
  P_HELP = 1000, P_VERSION, P_KEY, P_VIN, P_INFO, P_NOW, P_LIFETIME, P_UUID, P_ROUTING, P_DOMAIN,
  P_COMMAND, P_PARAMS, P_JSON
};

static const fq_opt_t g_sign_opts[] = {
    FQ_OPT_HELP(P_HELP),
    FQ_OPT_VERSION(P_VERSION),
    {"key", 0, "PEM", P_KEY, "the fleet private key (required)"},
    {"vin", 0, "VIN", P_VIN, "the vehicle (required)"},
    {"session-info", 0, "HEX", P_INFO, "the SessionInfo the car sent (required; not re-verified)"},
    {"now", 0, "SECS", P_NOW, "the vehicle clock in seconds (required)"},
    {"command", 0, "NAME", P_COMMAND, "the command, from the command table (required)"},
    {"params", 0, "JSON", P_PARAMS, "its parameters as a JSON object"},
    {"lifetime", 0, "SECS", P_LIFETIME, "how long the signature is valid (default 5)"},
    {"uuid", 0, "HEX", P_UUID, "the request UUID (16 bytes; default random)"},
    {"routing-address", 0, "HEX", P_ROUTING, "the routing address (16 bytes)"},
    {"domain", 0, "N", P_DOMAIN, "2 (VCSEC) or 3 (INFOTAINMENT); default the command's"},
    {"json", 0, NULL, P_JSON, "print {\"routable_message\": HEX} instead of the hex"},
    {NULL, 0, NULL, 0, NULL},
};

static const fq_cli_doc_t g_sign_doc = {
    .usage = "fleetq proto sign --key PEM --vin VIN --session-info HEX --now SECS\n"
             "                         --command NAME [--params JSON] [--lifetime SECS]\n"
             "                         [--uuid HEX] [--routing-address HEX] [--domain N] [--json]",
    .about = "Signs one vehicle command (HMAC_PERSONALIZED, flags 2) and prints the\n"
             "RoutableMessage as hex.  The counter used is the session's + 1.  Params\n"
             "are checked against the command table.  Nothing is sent anywhere.\n",
    .exit = "0 signed, 1 cannot sign (unknown command, bad params, unusable key or\n"
            "session info), 2 usage error.",
};

static const fq_opt_t g_decode_opts[] = {
    FQ_OPT_HELP(P_HELP),
    FQ_OPT_VERSION(P_VERSION),
    {"json", 0, NULL, P_JSON, "print the JSON on one line instead of indented"},
    {NULL, 0, NULL, 0, NULL},
};

static const fq_cli_doc_t g_decode_doc = {
    .usage = "fleetq proto decode [--json] [HEX]   (reads stdin without HEX)",
    .about = "Prints any RoutableMessage (a signed command, a reply, a session info,\n"
             "a fault) as readable JSON, with its payload decoded where it is not\n"
             "encrypted.  White space in HEX is ignored.\n",
    .exit = "0 decoded, 1 not hex or not a RoutableMessage, 2 usage error.",
};

/* `fleetq proto --help`: both. */
static void proto_usage(FILE *f) {
  fprintf(f, "usage: fleetq proto sign [options]     sign a command (see 'fleetq proto sign "
             "--help')\n"
             "       fleetq proto decode [HEX]      decode a message (see 'fleetq proto decode "
             "--help')\n"
             "\n"
             "Offline tools for the Vehicle Command Protocol: nothing here talks to the\n"
             "network.\n"
             "\n"
             "Exit status: 0 success, 1 failure, 2 usage error.\n");
}

/* Decode a fixed-size hex option; returns 0 or prints why and returns 2. */
static int hex_opt(const char *name, const char *hex, uint8_t *out, size_t want) {
  if (!hex) return 0;
  long n = fq_hex_decode(hex, out, want);
  if (n != (long)want || strlen(hex) != 2 * want) {
    return fq_opt_usage_error("fleetq proto sign", "--%s must be %zu bytes of hex", name, want);
  }
  return 0;
}

static int proto_sign(int argc, char **argv) {
  const char *prog = "fleetq proto sign";
  const char *keyp = NULL, *vin = NULL, *info_hex = NULL, *now_s = NULL, *life_s = NULL,
             *uuid_hex = NULL, *routing_hex = NULL, *domain_s = NULL, *command = NULL,
             *params_s = NULL;
  bool json = false;
  fq_opt_parser_t p;
  fq_opt_init(&p, prog, g_sign_opts, argc, argv);
  int c;
  while ((c = fq_opt_next(&p)) != FQ_OPT_END) {
    const char *v = p.value;
    switch (c) {
    case FQ_OPT_ERROR: return 2;
    case P_HELP: fq_cli_help(stdout, &g_sign_doc, g_sign_opts); return 0;
    case P_VERSION: return fq_opt_version(prog);
    case P_KEY: keyp = v; break;
    case P_VIN: vin = v; break;
    case P_INFO: info_hex = v; break;
    case P_NOW: now_s = v; break;
    case P_LIFETIME: life_s = v; break;
    case P_UUID: uuid_hex = v; break;
    case P_ROUTING: routing_hex = v; break;
    case P_DOMAIN: domain_s = v; break;
    case P_COMMAND: command = v; break;
    case P_PARAMS: params_s = v; break;
    case P_JSON: json = true; break;
    default: return fq_opt_usage_error(prog, "option --%s is not handled", p.opt->name);
    }
  }
  if (p.next < argc) return fq_opt_usage_error(prog, "unexpected argument '%s'", argv[p.next]);
  if (!keyp || !vin || !info_hex || !now_s || !command)
    return fq_opt_usage_error(prog, "--key, --vin, --session-info, --now and --command are "
                                    "required");
  char *end;
  errno = 0;
  long long now = strtoll(now_s, &end, 10);
  if (errno || *end || now < 0 || now > (long long)UINT32_MAX) {
    return fq_opt_usage_error(prog, "--now must be seconds (0..%u)", UINT32_MAX);
  }
  long long life = FQ_VCP_DEFAULT_LIFETIME_S;
  if (life_s) {
    life = strtoll(life_s, &end, 10);
    if (*end || life < 1 || life > 86400) {
      return fq_opt_usage_error(prog, "--lifetime must be 1..86400 seconds");
    }
  }
  uint8_t uuid[FQ_VCP_UUID_LEN], routing[FQ_VCP_ROUTING_LEN];
  if (hex_opt("uuid", uuid_hex, uuid, sizeof uuid) ||
      hex_opt("routing-address", routing_hex, routing, sizeof routing))
    return 2;
  uint8_t info[1024];
  long il = fq_hex_decode(info_hex, info, sizeof info);
  if (il < 0) {
    return fq_opt_usage_error(prog, "--session-info must be hex (at most 1024 bytes)");
  }

  int rc = 1;
  fq_err_t err;
  fq_err_clear(&err);
  json_t *pj = NULL;
  fq_vcp_key_t *key = NULL;
  fq_vcp_session_t *s = NULL;
  fq_buf_t payload, msg;
  fq_buf_init(&payload, FQ_VCP_MAX_PAYLOAD);
  fq_buf_init(&msg, FQ_VCP_MAX_MSG);
  char *hex = NULL;

  /* The command and its params go through the same table the daemon
   * uses, so what is refused here is refused there. */
  bool other = false;
  const fq_cmd_t *cmd = fq_cmd_find(command, strlen(command), FQ_DEV_VEHICLE, &other);
  if (!cmd) {
    fprintf(stderr, "fleetq proto sign: unknown vehicle command '%s'%s\n", command,
            other ? " (it is an energy-site command)" : "");
    goto out;
  }
  if (cmd->domain == FQ_DOMAIN_NONE) {
    fprintf(stderr, "fleetq proto sign: %s is not a signed command\n", command);
    goto out;
  }
  fq_pval_t pv[FQ_MAX_PARAMS];
  size_t np = 0;
  json_error_t je;
  pj = json_loads(params_s ? params_s : "{}", JSON_REJECT_DUPLICATES, &je);
  if (!pj) {
    fprintf(stderr, "fleetq proto sign: --params is not JSON: %s\n", je.text);
    goto out;
  }
  if (fq_pvals_from_json(pj, pv, &np, &err) || fq_cmd_validate(cmd, pv, np, &err)) {
    fprintf(stderr, "fleetq proto sign: %s\n", err.msg);
    goto out;
  }
  fq_cmd_builder_fn build = cmd->build_payload ? cmd->build_payload : fq_payload_build;
  if (build(cmd, pv, np, &payload, &err)) {
    fprintf(stderr, "fleetq proto sign: %s\n", err.msg);
    goto out;
  }
  int domain = cmd->domain;
  if (domain_s) {
    domain = (int)strtol(domain_s, &end, 10);
    if (*end || (domain != FQ_VCP_DOMAIN_VCSEC && domain != FQ_VCP_DOMAIN_INFOTAINMENT)) {
      rc = fq_opt_usage_error(prog, "--domain must be 2 (VCSEC) or 3 (INFOTAINMENT)");
      goto out;
    }
  }
  /* --now is the vehicle clock: run the session with no clock offset
   * (local clock == vehicle clock, anchored at the info's clock_time). */
  fq_vcp_session_info_t si;
  if (fq_vcp_session_info_decode(info, (size_t)il, &si, &err) ||
      fq_vcp_key_load(keyp, &key, &err) ||
      fq_vcp_session_from_info(key, vin, domain, info, (size_t)il, (int64_t)si.clock_time * 1000,
                               routing_hex ? routing : NULL, &s, &err)) {
    fprintf(stderr, "fleetq proto sign: %s\n", err.msg);
    goto out;
  }
  fq_vcp_request_t req;
  fq_vcp_sign_opts_t so = {.now_ms = now * 1000, .lifetime_s = (uint32_t)life,
                           .uuid = uuid_hex ? uuid : NULL};
  if (fq_vcp_sign(s, payload.data, payload.len, &so, &req, &msg, &err)) {
    fprintf(stderr, "fleetq proto sign: %s\n", err.msg);
    goto out;
  }
  hex = malloc(2 * msg.len + 1);
  if (!hex) goto out;
  fq_hex_encode(msg.data, msg.len, hex);
  if (json)
    printf("{\"routable_message\":\"%s\"}\n", hex); /* hex needs no JSON escaping */
  else
    printf("%s\n", hex);
  rc = 0;
out:
  free(hex);
  json_decref(pj);
  fq_buf_free(&payload);
  fq_buf_free(&msg);
  fq_vcp_session_destroy(&s);
  fq_vcp_key_destroy(&key);
  return rc;
}

/* ---------------------------------------------------------------------- */

static json_t *jhex(const uint8_t *p, size_t n) {
  char *h = malloc(2 * n + 1);
  if (!h) return json_null();
  fq_hex_encode(p, n, h);
  json_t *j = json_string(h);
  free(h);
  return j;
}

static json_t *jdest(int domain, bool has_routing, const uint8_t *routing) {
  json_t *d = json_object();
  if (domain >= 0) {
    json_object_set_new(d, "domain", json_integer(domain));
    const char *name = domain == 2 ? "VEHICLE_SECURITY" : domain == 3 ? "INFOTAINMENT"
                       : domain == 0 ? "BROADCAST" : "?";
    json_object_set_new(d, "domain_name", json_string(name));
  }
  if (has_routing) json_object_set_new(d, "routing_address", jhex(routing, FQ_VCP_ROUTING_LEN));
  return d;
}

static json_t *joutcome(const fq_vcp_outcome_t *o) {
  json_t *j = json_object();
  json_object_set_new(j, "action", json_string(fq_vcp_action_name(o->action)));
  if (o->reason[0]) json_object_set_new(j, "reason", json_string(o->reason));
  return j;
}

static json_t *japp_command(int domain, const uint8_t *p, size_t n) {
  fq_vcp_app_cmd_t c;
  fq_err_t err;
  fq_err_clear(&err);
  if (fq_vcp_app_decode_command(domain, p, n, &c, &err)) return json_pack("{s:s}", "error", err.msg);
  json_t *params = json_object();
  for (size_t i = 0; i < c.nparams; i++) {
    json_t *v = c.params[i].type == FQ_PT_BOOL    ? json_boolean(c.params[i].b)
                : c.params[i].type == FQ_PT_INT   ? json_integer(c.params[i].i)
                : c.params[i].type == FQ_PT_FLOAT ? json_real(c.params[i].f)
                                                  : json_string(c.params[i].s);
    json_object_set_new(params, c.params[i].name, v);
  }
  return json_pack("{s:s,s:o}", "command", c.name, "params", params);
}

static int proto_decode(int argc, char **argv) {
  const char *prog = "fleetq proto decode";
  bool json = false;
  fq_opt_parser_t p;
  fq_opt_init(&p, prog, g_decode_opts, argc, argv);
  int c;
  while ((c = fq_opt_next(&p)) != FQ_OPT_END) {
    if (c == FQ_OPT_ERROR) return 2;
    if (c == P_HELP) {
      fq_cli_help(stdout, &g_decode_doc, g_decode_opts);
      return 0;
    }
    if (c == P_VERSION) return fq_opt_version(prog);
    if (c == P_JSON) json = true;
  }
  if (argc - p.next > 1) return fq_opt_usage_error(prog, "give one message (HEX) at most");
  const char *arg = p.next < argc ? argv[p.next] : NULL;
  static char text[HEX_MAX + 1];
  size_t tl = 0;
  if (arg) {
    tl = strlen(arg);
    if (tl > HEX_MAX) {
      fprintf(stderr, "fleetq proto decode: message larger than %d bytes\n", FQ_VCP_MAX_MSG);
      return 1;
    }
    memcpy(text, arg, tl);
  } else {
    tl = fread(text, 1, HEX_MAX, stdin);
  }
  /* Drop white space, so pasted text with spaces or newlines works. */
  size_t o = 0;
  for (size_t i = 0; i < tl; i++)
    if (!strchr(" \t\r\n", text[i])) text[o++] = text[i];
  text[o] = 0;
  if (o == 0) {
    fprintf(stderr, "fleetq proto decode: no message given\n");
    return 1;
  }
  static uint8_t bytes[FQ_VCP_MAX_MSG];
  long n = fq_hex_decode(text, bytes, sizeof bytes);
  if (n < 0) {
    fprintf(stderr, "fleetq proto decode: not hex (or larger than %d bytes)\n", FQ_VCP_MAX_MSG);
    return 1;
  }
  fq_vcp_msg_t m;
  fq_err_t err;
  fq_err_clear(&err);
  if (fq_vcp_msg_decode(bytes, (size_t)n, &m, &err)) {
    fprintf(stderr, "fleetq proto decode: %s\n", err.msg);
    return 1;
  }
  json_t *j = json_object();
  if (m.to_domain >= 0 || m.has_to_routing)
    json_object_set_new(j, "to_destination", jdest(m.to_domain, m.has_to_routing, m.to_routing));
  if (m.from_domain >= 0 || m.has_from_routing)
    json_object_set_new(j, "from_destination",
                        jdest(m.from_domain, m.has_from_routing, m.from_routing));
  if (m.has_payload) {
    json_object_set_new(j, "protobuf_message_as_bytes", jhex(m.payload, m.payload_len));
    if (m.has_gcm_response) {
      json_object_set_new(j, "payload_note", json_string("encrypted (AES-GCM response)"));
    } else if (m.to_domain >= 0) {
      json_object_set_new(j, "payload_decoded", japp_command(m.to_domain, m.payload, m.payload_len));
    } else if (m.from_domain >= 0) {
      fq_vcp_outcome_t oc;
      fq_vcp_classify_app_reply(m.from_domain, m.payload, m.payload_len, &oc);
      json_object_set_new(j, "payload_decoded", joutcome(&oc));
    }
  }
  if (m.has_session_info_request) {
    json_t *r = json_object();
    json_object_set_new(r, "public_key", jhex(m.req_public_key, m.req_public_key_len));
    if (m.req_challenge_len) json_object_set_new(r, "challenge", jhex(m.req_challenge, m.req_challenge_len));
    json_object_set_new(j, "session_info_request", r);
  }
  if (m.has_session_info) {
    fq_vcp_session_info_t si;
    json_t *r = json_object();
    json_object_set_new(r, "raw", jhex(m.session_info, m.session_info_len));
    if (fq_vcp_session_info_decode(m.session_info, m.session_info_len, &si, &err) == 0) {
      json_object_set_new(r, "counter", json_integer(si.counter));
      json_object_set_new(r, "public_key", jhex(si.public_key, FQ_VCP_PUBKEY_LEN));
      json_object_set_new(r, "epoch", jhex(si.epoch, FQ_VCP_EPOCH_LEN));
      json_object_set_new(r, "clock_time", json_integer(si.clock_time));
      json_object_set_new(r, "status", json_string(si.status == 0 ? "OK" : si.status == 1
                                                                           ? "KEY_NOT_ON_WHITELIST"
                                                                           : "?"));
      if (si.handle) json_object_set_new(r, "handle", json_integer(si.handle));
    } else {
      json_object_set_new(r, "error", json_string(err.msg));
    }
    json_object_set_new(j, "session_info", r);
  }
  if (m.has_status) {
    static const char *const ops[] = {"OK", "WAIT", "ERROR"};
    fq_vcp_outcome_t oc;
    fq_vcp_classify_fault(m.fault, &oc);
    json_t *r = json_object();
    json_object_set_new(r, "operation_status",
                        m.op_status >= 0 && m.op_status <= 2 ? json_string(ops[m.op_status])
                                                             : json_integer(m.op_status));
    json_object_set_new(r, "signed_message_fault", json_integer(m.fault));
    json_object_set_new(r, "fault_name", json_string(fq_vcp_fault_name(m.fault)));
    json_object_set_new(r, "action", json_string(fq_vcp_action_name(oc.action)));
    if (oc.reason[0]) json_object_set_new(r, "reason", json_string(oc.reason));
    json_object_set_new(j, "signedMessageStatus", r);
  }
  if (m.has_signer_public_key || m.has_session_info_tag || m.has_hmac || m.has_gcm_response) {
    json_t *sd = json_object();
    if (m.has_signer_public_key)
      json_object_set_new(sd, "signer_public_key", jhex(m.signer_public_key, FQ_VCP_PUBKEY_LEN));
    if (m.has_session_info_tag)
      json_object_set_new(sd, "session_info_tag", jhex(m.session_info_tag, FQ_VCP_TAG_LEN));
    if (m.has_hmac)
      json_object_set_new(sd, "HMAC_Personalized_data",
                          json_pack("{s:o,s:I,s:I,s:o}", "epoch", jhex(m.epoch, FQ_VCP_EPOCH_LEN),
                                    "counter", (json_int_t)m.counter, "expires_at",
                                    (json_int_t)m.expires_at, "tag", jhex(m.tag, FQ_VCP_TAG_LEN)));
    if (m.has_gcm_response)
      json_object_set_new(sd, "AES_GCM_Response_data",
                          json_pack("{s:o,s:I,s:o}", "nonce", jhex(m.gcm_nonce, FQ_VCP_NONCE_LEN),
                                    "counter", (json_int_t)m.gcm_counter, "tag",
                                    jhex(m.gcm_tag, FQ_VCP_GCM_TAG_LEN)));
    json_object_set_new(j, "signature_data", sd);
  }
  if (m.request_uuid_len) json_object_set_new(j, "request_uuid", jhex(m.request_uuid, m.request_uuid_len));
  if (m.uuid_len) json_object_set_new(j, "uuid", jhex(m.uuid, m.uuid_len));
  if (m.flags) json_object_set_new(j, "flags", json_integer(m.flags));
  fq_vcp_msg_clear(&m);
  char *out = json_dumps(j, (json ? JSON_COMPACT : JSON_INDENT(2)) | JSON_PRESERVE_ORDER);
  json_decref(j);
  if (!out) return 1;
  printf("%s\n", out);
  free(out);
  return 0;
}

static int cmd_proto(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    proto_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (strcmp(argv[1], "--version") == 0) return fq_opt_version("fleetq");
  if (strcmp(argv[1], "sign") == 0) return proto_sign(argc - 1, argv + 1);
  if (strcmp(argv[1], "decode") == 0) return proto_decode(argc - 1, argv + 1);
  return fq_opt_usage_error("fleetq proto", "unknown subcommand '%s' (sign, decode)", argv[1]);
}

FQ_CLI_COMMAND("proto", cmd_proto, "sign or decode Vehicle Command Protocol messages offline")
