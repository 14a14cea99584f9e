/*
 * fleet_status answers.  See fleetstatus.h.
 */
#include "fleetstatus.h"

#include <string.h>
#include <strings.h>

static bool listed(const json_t *arr, const char *vin) {
  size_t i;
  json_t *e;
  json_array_foreach(arr, i, e) {
    const char *s = json_string_value(e);
    if (s && strcasecmp(s, vin) == 0) return true;
  }
  return false;
}

static const json_t *response_of(const json_t *root) {
  const json_t *r = json_object_get(root, "response");
  return json_is_object(r) ? r : NULL;
}

/* What r says of vin (whether named or not). */
static void describe(const json_t *r, const char *vin, fq_fs_vin_t *out) {
  out->vin = vin;
  if (listed(json_object_get(r, "key_paired_vins"), vin)) out->paired = 1;
  else if (listed(json_object_get(r, "unpaired_vins"), vin)) out->paired = 0;
  else out->paired = -1;
  out->protocol_required = -1;
  const json_t *info = json_object_get(r, "vehicle_info");
  const char *k;
  json_t *vi;
  json_object_foreach((json_t *)info, k, vi) {
    if (strcasecmp(k, vin) != 0) continue;
    const json_t *req = json_object_get(vi, "vehicle_command_protocol_required");
    if (json_is_boolean(req)) out->protocol_required = json_is_true(req) ? 1 : 0;
    break;
  }
}

bool fq_fs_find(const json_t *root, const char *vin, fq_fs_vin_t *out) {
  const json_t *r = response_of(root);
  out->vin = vin;
  out->paired = -1;
  out->protocol_required = -1;
  if (!r) return false;
  describe(r, vin, out);
  if (out->paired >= 0 || out->protocol_required >= 0) return true;
  /* Named in vehicle_info with nothing readable still counts as named. */
  const json_t *info = json_object_get(r, "vehicle_info");
  const char *k;
  json_t *vi;
  json_object_foreach((json_t *)info, k, vi) {
    if (strcasecmp(k, vin) == 0) return true;
  }
  return false;
}

int fq_fs_walk_json(const json_t *root, fq_fs_visit_fn fn, void *ud, fq_err_t *err) {
  const json_t *r = response_of(root);
  if (!r) return fq_errf(err, FQ_EPROTO, "fleet_status answer without a \"response\" object");
  /* Every VIN once: the lists first, then vehicle_info's keys that no
   * list names (a car Fleet API describes without saying whether our key
   * is on it). */
  const char *lists[2] = {"key_paired_vins", "unpaired_vins"};
  for (int l = 0; l < 2; l++) {
    const json_t *arr = json_object_get(r, lists[l]);
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) {
      const char *vin = json_string_value(e);
      if (!vin) continue;
      /* Named in both lists: the first (paired) wins, as doctor reads it. */
      if (l == 1 && listed(json_object_get(r, lists[0]), vin)) continue;
      fq_fs_vin_t v;
      describe(r, vin, &v);
      int rc = fn(ud, &v);
      if (rc) return rc;
    }
  }
  const char *k;
  json_t *vi;
  json_object_foreach((json_t *)json_object_get(r, "vehicle_info"), k, vi) {
    fq_fs_vin_t v;
    describe(r, k, &v);
    if (v.paired >= 0) continue; /* visited above */
    int rc = fn(ud, &v);
    if (rc) return rc;
  }
  return 0;
}

int fq_fs_walk(const void *body, size_t len, fq_fs_visit_fn fn, void *ud, fq_err_t *err) {
  json_error_t je;
  json_t *root = body && len ? json_loadb(body, len, 0, &je) : NULL;
  if (!root) return fq_errf(err, FQ_EPROTO, "fleet_status answer is not JSON");
  int rc = fq_fs_walk_json(root, fn, ud, err);
  json_decref(root);
  return rc;
}
