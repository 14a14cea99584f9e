/*
 * payload: the bytes each command sends.  For a signed vehicle command the
 * protobuf payload (CarServer.Action for INFOTAINMENT, VCSEC.UnsignedMessage
 * for VCSEC) that fq_vcp_sign() wraps; for REST calls (energy sites, cars
 * that do not speak the Vehicle Command Protocol) the JSON body.
 *
 * The protobuf builders sit next to the command table that names them
 * (commands.c); this is the way in by name, and the generic JSON body.
 * Builders read parameters that fq_cmd_validate() checked and never check
 * them again; fq_payload_build_named() runs that check itself.
 * All functions are reentrant and thread safe.
 */
#ifndef FQ_PAYLOAD_H
#define FQ_PAYLOAD_H

#include <stddef.h>

#include "fleetq/buf.h"
#include "fleetq/commands.h"
#include "fleetq/error.h"

/* fq_cmd_builder_fn for any command of the table: runs cmd->build_payload
 * on params that passed fq_cmd_validate().  Returns 0, FQ_EUNKCMD (cmd has
 * no signed payload: wake_up, energy sites), or the builder's error (see
 * fq_cmd_builder_fn); on error out is left as it was. */
int fq_payload_build(const fq_cmd_t *cmd, const fq_pval_t *params, size_t n, fq_buf_t *out,
                     fq_err_t *err);

/* The same by command name ("set_charge_limit"; also "ping" with ping_id,
 * which is not a user command), with params not checked yet: they go
 * through fq_cmd_validate() first.  *domain (may be NULL) receives the
 * vehicle domain (2 VCSEC, 3 INFOTAINMENT).  Returns 0, FQ_EUNKCMD (no
 * signed payload for that name), FQ_EBADPARAM (err names the parameter),
 * or a buffer error; on error out is left as it was. */
int fq_payload_build_named(const char *name, const fq_pval_t *params, size_t n, int *domain,
                           fq_buf_t *out, fq_err_t *err);

/* Vehicle domain of a command name with a signed payload, or 0. */
int fq_payload_domain(const char *name);

/* The table entry (or the internal ping) whose signed payload is called
 * name, or NULL.  For payload.c; defined in commands.c. */
const fq_cmd_t *fq__cmd_signed(const char *name);

/* fq_cmd_builder_fn for REST bodies: a JSON object of the params, each
 * under its own name with its own type (an energy site's
 * {"backup_reserve_percent": 30}, a legacy car's {"percent": 80}); a MAP
 * parameter (time_of_use_settings' tou_settings) is converted from its
 * msgpack bytes to JSON (string keys only, at most 16 levels deep).  No
 * params gives "{}".  Returns 0, FQ_EBADPARAM (unconvertible map) or a
 * buffer error.  cmd may be NULL. */
int fq_payload_build_json(const fq_cmd_t *cmd, const fq_pval_t *params, size_t n, fq_buf_t *out,
                          fq_err_t *err);

/* Params given as a JSON object (CLI, tests) into pv[FQ_MAX_PARAMS]; *n
 * receives the count.  Types map one to one: true/false -> bool, integers
 * -> int, reals -> float, strings -> str (borrowed from j: valid while j
 * lives).  null, arrays and nested objects are FQ_EBADPARAM, as is more
 * than FQ_MAX_PARAMS entries or a j that is not an object. */
struct json_t;
int fq_pvals_from_json(const struct json_t *j, fq_pval_t *pv, size_t *n, fq_err_t *err);

#endif
