/*
 * Application replies of the Vehicle Command Protocol on the fleet side
 * (see vcp.h): the classification of the car's CarServer.Response and
 * VCSEC.FromVCSECMessage into what the dispatcher does next.  Decoding a
 * command payload back into its name is in vcp_app_decode.c; the car's
 * side (building those replies) is in src/sim/vcp_app_car.c.
 */
#include <stdio.h>
#include <string.h>

#include "car_server.pb-c.h"
#include "vcp.h"
#include "vcsec.pb-c.h"

/* reason = prefix followed by text. */
static void set(fq_vcp_outcome_t *o, fq_vcp_action_t a, int error, const char *prefix,
                const char *text) {
  o->action = a;
  o->fault = -1;
  o->error = error;
  o->car_refused = false;
  o->car_reason[0] = 0;
  snprintf(o->reason, sizeof o->reason, "%s%.*s", prefix, (int)sizeof o->reason - 1, text);
  /* The car's text ends up in status events, logs and JSON: keep it to
   * printable ASCII so a hostile or broken reply cannot inject control
   * bytes or invalid UTF-8. */
  for (char *p = o->reason; *p; p++)
    if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e) *p = '?';
}

static const char *const nominal_names[] = {
    "NONE", "UNKNOWN", "CLOSURES_OPEN", "ALREADY_ON", "DISABLED_FOR_USER_COMMAND",
    "VEHICLE_NOT_IN_PARK", "UNAUTHORIZED", "NOT_ALLOWED_OVER_TRANSPORT"};

int fq_vcp_classify_app_reply(int domain, const uint8_t *p, size_t n, fq_vcp_outcome_t *out) {
  if (n == 0) {
    set(out, FQ_VCP_OK, 0, "", "");
    return 0;
  }
  if (domain == FQ_VCP_DOMAIN_VCSEC) {
    VCSEC__FromVCSECMessage *m = vcsec__from_vcsecmessage__unpack(NULL, n, p);
    if (!m) {
      set(out, FQ_VCP_FAIL, FQ_EPROTO, "", "undecodable VCSEC reply");
      return FQ_EPROTO;
    }
    if (m->sub_message_case == VCSEC__FROM_VCSECMESSAGE__SUB_MESSAGE_NOMINAL_ERROR) {
      unsigned e = (unsigned)m->nominalerror->genericerror;
      char num[16];
      snprintf(num, sizeof num, "%u", e);
      if (e == 0) set(out, FQ_VCP_OK, 0, "", "");
      else
        set(out, FQ_VCP_FAIL, FQ_EFAULT, "vcsec could not execute command: ",
            e < sizeof nominal_names / sizeof nominal_names[0] ? nominal_names[e] : num);
    } else if (m->sub_message_case == VCSEC__FROM_VCSECMESSAGE__SUB_MESSAGE_COMMAND_STATUS) {
      switch (m->commandstatus->operationstatus) {
      case VCSEC__OPERATION_STATUS__E__OPERATIONSTATUS_OK: set(out, FQ_VCP_OK, 0, "", ""); break;
      case VCSEC__OPERATION_STATUS__E__OPERATIONSTATUS_WAIT:
        set(out, FQ_VCP_RETRY, FQ_EBUSY, "", "vehicle busy or finishing wake-up");
        break;
      default:
        set(out, FQ_VCP_FAIL, FQ_EFAULT, "", "vcsec could not execute command: error status");
        break;
      }
    } else {
      set(out, FQ_VCP_OK, 0, "", "");
    }
    vcsec__from_vcsecmessage__free_unpacked(m, NULL);
    return 0;
  }
  CarServer__Response *r = car_server__response__unpack(NULL, n, p);
  if (!r) {
    set(out, FQ_VCP_FAIL, FQ_EPROTO, "", "undecodable CarServer reply");
    return FQ_EPROTO;
  }
  if (r->actionstatus && r->actionstatus->result != CAR_SERVER__OPERATION_STATUS__E__OPERATIONSTATUS_OK) {
    const CarServer__ResultReason *rr = r->actionstatus->result_reason;
    const char *why = rr && rr->reason_case == CAR_SERVER__RESULT_REASON__REASON_PLAIN_TEXT &&
                              rr->plain_text && rr->plain_text[0]
                          ? rr->plain_text
                          : "unspecified error";
    /* The car's own words ("already_set", "is_charging") are what users
     * and upstream code match on: copy them as they are. */
    set(out, FQ_VCP_FAIL, FQ_EFAULT, "", why);
    out->car_refused = true;
    if (!rr || why != rr->plain_text) why = ""; /* "unspecified error" is ours */
    snprintf(out->car_reason, sizeof out->car_reason, "%.*s", (int)sizeof out->car_reason - 1,
             why);
    for (char *q = out->car_reason; *q; q++)
      if ((unsigned char)*q < 0x20 || (unsigned char)*q > 0x7e) *q = '?';
  } else {
    set(out, FQ_VCP_OK, 0, "", "");
  }
  car_server__response__free_unpacked(r, NULL);
  return 0;
}
