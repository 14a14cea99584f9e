/*
 * payload: the bytes each command sends.  For a signed vehicle command the
 * protobuf payload (CarServer.Action for INFOTAINMENT, VCSEC.UnsignedMessage
 * for VCSEC) that fq_vcp_sign() wraps; for REST calls (energy sites, cars
 * that do not speak the Vehicle Command Protocol) the JSON body.
 *
 * Builders read parameters that fq_cmd_validate() already checked, but do
 * not rely on it: a missing or mistyped parameter is FQ_EBADPARAM here too.
 * All functions are reentrant and thread safe.
 */
#ifndef FQ_PAYLOAD_H
#define FQ_PAYLOAD_H

#include <stddef.h>

#include "fleetq/buf.h"
#include "fleetq/commands.h"
#include "fleetq/error.h"

/* fq_cmd_builder_fn for every signed vehicle command of the table: builds
 * the protobuf payload for cmd->name and appends it to out.  Returns 0,
 * FQ_EUNKCMD (no signed payload for that name), FQ_EBADPARAM, or a buffer
 * error. */
int fq_payload_build(const fq_cmd_t *cmd, const fq_pval_t *params, size_t n, fq_buf_t *out,
                     fq_err_t *err);

/* The same by command name ("set_charge_limit"; also "ping" with ping_id,
 * which is not a user command).  *domain (may be NULL) receives the
 * vehicle domain (2 VCSEC, 3 INFOTAINMENT). */
int fq_payload_build_named(const char *name, const fq_pval_t *params, size_t n, int *domain,
                           fq_buf_t *out, fq_err_t *err);

/* Vehicle domain of a command name with a signed payload, or 0. */
int fq_payload_domain(const char *name);

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
