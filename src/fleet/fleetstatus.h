/*
 * Reading the answer of POST /api/1/vehicles/fleet_status (spec
 * fleet-api.md §7.3), shared by fleetqd's pre-check (src/daemon/precheck.c)
 * and `fleetq doctor`:
 *
 *   {"response":{"key_paired_vins":[...],"unpaired_vins":[...],
 *     "vehicle_info":{"VIN":{"vehicle_command_protocol_required":true,...}}}}
 *
 * Each VIN the answer names (in either list or in vehicle_info) is handed
 * to a visitor once, with what the answer says of it.  A VIN the answer
 * does not name is one Fleet API does not list for the account.
 */
#ifndef FQ_FLEETSTATUS_H
#define FQ_FLEETSTATUS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "fleetq/error.h"

/* Most VINs fleetqd puts in one fleet_status request. */
#define FQ_FS_BATCH_MAX 100

typedef struct fq_fs_vin {
  const char *vin;            /* as the answer spells it */
  int paired;                 /* 1 key_paired_vins, 0 unpaired_vins, -1 neither */
  int protocol_required;      /* vehicle_command_protocol_required: 1 true, 0 false,
                                 -1 absent or not a boolean */
} fq_fs_vin_t;

/* Return non-zero to stop the walk (that value is returned). */
typedef int (*fq_fs_visit_fn)(void *ud, const fq_fs_vin_t *v);

/* Walk a parsed answer (the whole envelope).  FQ_EPROTO (err set) when
 * it has no "response" object; else 0 or the visitor's stop value. */
int fq_fs_walk_json(const json_t *root, fq_fs_visit_fn fn, void *ud, fq_err_t *err);

/* The same from the raw body. */
int fq_fs_walk(const void *body, size_t len, fq_fs_visit_fn fn, void *ud, fq_err_t *err);

/* What the answer says of one VIN (case-insensitive); *out->vin points
 * into root.  False when the answer does not name it (out->paired -1). */
bool fq_fs_find(const json_t *root, const char *vin, fq_fs_vin_t *out);

#endif
