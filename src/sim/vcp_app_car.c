/*
 * The car's application replies (see vcp_car.h): the CarServer.Response an
 * INFOTAINMENT domain and the VCSEC.FromVCSECMessage a VCSEC domain send
 * back for a command, packed with the protobuf-c generated code.  The
 * fleet side classifies these bytes (fq_vcp_classify_app_reply in
 * src/vcp/vcp_app.c).
 */
#include "car_server.pb-c.h"
#include "vcp_car.h"
#include "vcsec.pb-c.h"

static int pack_into(const ProtobufCMessage *m, fq_buf_t *out) {
  size_t n = protobuf_c_message_get_packed_size(m);
  int rc = fq_buf_reserve(out, n);
  if (rc) return rc;
  out->len += protobuf_c_message_pack(m, out->data + out->len);
  return 0;
}

int fq_vcp_app_carserver_reply(bool ok, const char *reason, fq_buf_t *out) {
  CarServer__Response r;
  CarServer__ActionStatus st;
  CarServer__ResultReason rr;
  car_server__response__init(&r);
  car_server__action_status__init(&st);
  car_server__result_reason__init(&rr);
  st.result = ok ? CAR_SERVER__OPERATION_STATUS__E__OPERATIONSTATUS_OK
                 : CAR_SERVER__OPERATION_STATUS__E__OPERATIONSTATUS_ERROR;
  if (reason && reason[0]) {
    rr.reason_case = CAR_SERVER__RESULT_REASON__REASON_PLAIN_TEXT;
    rr.plain_text = (char *)reason;
    st.result_reason = &rr;
  }
  r.actionstatus = &st;
  return pack_into(&r.base, out);
}

int fq_vcp_app_vcsec_reply(int op_status, int nominal_error, fq_buf_t *out) {
  VCSEC__FromVCSECMessage m;
  VCSEC__CommandStatus cs;
  Errors__NominalError ne;
  vcsec__from_vcsecmessage__init(&m);
  vcsec__command_status__init(&cs);
  errors__nominal_error__init(&ne);
  if (nominal_error > 0) {
    ne.genericerror = (Errors__GenericErrorE)nominal_error;
    m.sub_message_case = VCSEC__FROM_VCSECMESSAGE__SUB_MESSAGE_NOMINAL_ERROR;
    m.nominalerror = &ne;
  } else if (op_status >= 0) {
    cs.operationstatus = (VCSEC__OperationStatusE)op_status;
    m.sub_message_case = VCSEC__FROM_VCSECMESSAGE__SUB_MESSAGE_COMMAND_STATUS;
    m.commandstatus = &cs;
  }
  return pack_into(&m.base, out);
}
