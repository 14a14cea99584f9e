/*
 * The command table: every command fleetq can send, declared once as data
 * (name, device type, vehicle domain, parameters with types and ranges,
 * OAuth scopes, idempotency, coalescing, REST path, payload builder) and
 * checked centrally before anything is stored or sent.  Tesla bills every
 * request answered below HTTP 500, so a typo or an out-of-range value must
 * be refused here.
 *
 * The table is read-only static data: every function here is thread safe.
 */
#ifndef FQ_COMMANDS_H
#define FQ_COMMANDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleetq/buf.h"
#include "fleetq/error.h"

typedef enum fq_devtype { FQ_DEV_VEHICLE = 1, FQ_DEV_SITE = 2 } fq_devtype_t;

/* Vehicle domains of the Vehicle Command Protocol; 0 = not signed. */
enum { FQ_DOMAIN_NONE = 0, FQ_DOMAIN_VCSEC = 2, FQ_DOMAIN_INFOTAINMENT = 3 };

/* OAuth scopes as bits; a command lists the scopes any one of which
 * allows it. */
enum {
  FQ_SCOPE_VEHICLE_CMDS = 1u << 0,
  FQ_SCOPE_VEHICLE_CHARGING_CMDS = 1u << 1,
  FQ_SCOPE_ENERGY_CMDS = 1u << 2,
  FQ_SCOPE_VEHICLE_DEVICE_DATA = 1u << 3,
  FQ_SCOPE_ENERGY_DEVICE_DATA = 1u << 4,
};

/* Parameter value types.  On the wire (msgpack) an integer is accepted for
 * a FLOAT parameter; nothing else is converted. */
typedef enum fq_ptype {
  FQ_PT_BOOL = 1,
  FQ_PT_INT,
  FQ_PT_FLOAT,
  FQ_PT_STR,
  FQ_PT_MAP, /* an opaque nested map, kept as its msgpack bytes */
} fq_ptype_t;

/* One decoded parameter, borrowed from the request bytes it was decoded
 * from (valid as long as those bytes are). */
typedef struct fq_pval {
  const char *name;
  size_t name_len;
  fq_ptype_t type; /* the type as sent */
  union {
    bool b;
    int64_t i;
    double f;
    struct {
      const char *p;
      size_t n;
    } s;
    struct {
      const uint8_t *p;
      size_t n;
    } raw;
  } v;
} fq_pval_t;

#define FQ_MAX_PARAMS 16

/* A further rule for a free-text STR parameter (a PIN's digits, a list of
 * day names): NULL when the n bytes at s are fine, else what is wrong, as
 * the end of the error message ("must be 4 digits"). */
typedef const char *(*fq_str_check_fn)(const char *s, size_t n);

/* How one parameter is checked.  A STR is either one of its choices or
 * free text: 1..max_len bytes and no NUL byte (a protobuf string cannot
 * carry one), and then what `check` says, if set. */
typedef struct fq_param_spec {
  const char *name;
  fq_ptype_t type;
  bool required;
  double min, max;             /* INT / FLOAT: inclusive range */
  size_t max_len;              /* STR without choices: byte length 1..max_len */
  const char *const *choices;  /* STR: NULL-terminated allowed values, or NULL */
  bool rest_only;              /* only REST bodies carry it: the signed payload has no field */
  fq_str_check_fn check;       /* STR without choices: a further rule, or NULL */
  const char *examples[2];     /* STR with check: two different values it accepts (tests) */
  bool gates;                  /* BOOL: the other parameters reach the payload only when this
                                * is true (set_scheduled_departure's `enable`) */
} fq_param_spec_t;

typedef struct fq_cmd fq_cmd_t;

/* Builds the bytes sent for one command: protobuf payload bytes for a
 * signed vehicle command, or the JSON body for a REST call, appended to out.
 * params must have passed fq_cmd_validate() for cmd: builders read them and
 * check nothing again (handed unchecked params they stay memory safe, but
 * what they build need not match).  Returns 0, a buffer error (-ENOMEM,
 * FQ_ETOOLARGE past out's cap), or FQ_EBADPARAM from the JSON builder for a
 * value JSON cannot carry; on error nothing is appended. */
typedef int (*fq_cmd_builder_fn)(const fq_cmd_t *cmd, const fq_pval_t *params, size_t n,
                                 fq_buf_t *out, fq_err_t *err);

struct fq_cmd {
  const char *name;       /* Fleet API REST name, also our wire `command` */
  fq_devtype_t dev;
  int domain;             /* FQ_DOMAIN_*; NONE for energy sites, wake_up and the vehicle
                           * commands Fleet API takes only as REST (navigation_request) */
  const fq_param_spec_t *params;
  size_t nparams;
  unsigned scopes;        /* FQ_SCOPE_* bits, any one suffices */
  bool idempotent;        /* safe to re-send after an unknown outcome */
  const char *rest_suffix;/* path after /api/1/{vehicles|energy_sites}/{id}/ */
  fq_cmd_builder_fn build_payload; /* signed protobuf payload (vehicles), or NULL */
  int build_arg;          /* a constant for build_payload: which member of a shared
                           * message it sets (an RKE action, a oneof case, ...) */
  fq_cmd_builder_fn build_json;    /* REST JSON body (sites, legacy cars) */
  bool need_any_param;    /* all params optional, but at least one must be sent */
  /* A rule across parameters the specs cannot state (set_valet_mode on
   * needs its PIN), run last by fq_cmd_validate(): 0, or FQ_EBADPARAM with
   * err set.  NULL for most commands. */
  int (*check)(const fq_pval_t *params, size_t n, fq_err_t *err);
  bool wake;              /* the wake_up endpoint itself: done once the car is online.
                           * Other unsigned vehicle commands (domain NONE: a plain REST
                           * call, e.g. navigation_request) wake the car first like any
                           * command and are then sent. */
  bool coalesce;          /* sets a value, so only the newest queued one matters: what a
                           * submit's `coalesce: true` is meant for.  Advice for clients
                           * (the protocol doc shows it); the daemon coalesces any command
                           * whose submit asks for it. */
  bool signed_only;       /* no REST form: Fleet API has no command/<name> for it, so a car
                           * without the Vehicle Command Protocol cannot be sent it (fleetq's
                           * non-toggling closures).  Such a car's command fails at dispatch
                           * with unknown_command, nothing sent. */
};

/* Look a command up by name for a device type.  Returns NULL when unknown;
 * when `other` is not NULL it is set to true if the name exists for the
 * other device type (so the caller can say so). */
const fq_cmd_t *fq_cmd_find(const char *name, size_t len, fq_devtype_t dev, bool *other);

/* Number of commands and the i-th one (for listings and tests). */
size_t fq_cmd_count(void);
const fq_cmd_t *fq_cmd_at(size_t i);

/* Check params against the command: names known (an unknown parameter is
 * an error), no duplicates, required ones present, types and ranges.  The
 * one check of a command's params: run it before a builder.
 * Returns 0 or FQ_EBADPARAM with err->msg naming the parameter, e.g.
 * "params.percent: 120 is out of range 50..100". */
int fq_cmd_validate(const fq_cmd_t *cmd, const fq_pval_t *params, size_t n, fq_err_t *err);

/* Find a parameter by name in a decoded list; NULL if absent. */
const fq_pval_t *fq_pval_get(const fq_pval_t *params, size_t n, const char *name);

/* Numeric value of an INT or FLOAT parameter as a double (an integer may be
 * sent for a FLOAT parameter: builders should read FLOAT params with this);
 * 0 for other types. */
double fq_pval_num(const fq_pval_t *pv);

/* Name of a parameter type for messages and docs: "bool", "integer",
 * "number", "string", "map". */
const char *fq_ptype_name(fq_ptype_t t);

/* Days of the week as the Fleet API writes them ("Mon,Wed", "All",
 * "Weekdays"; names or their short forms Sun Mon Tues Wed Thurs Fri Sat,
 * any case, blanks around commas allowed) to the bit mask of the car's
 * schedules (Sunday = 1 ... Saturday = 64).  -1 if any item is no day. */
int fq_days_of_week_parse(const char *s, size_t n);

/* Parse a space- or comma-separated scope list ("openid vehicle_cmds ...")
 * into FQ_SCOPE_* bits; unknown names are ignored. */
unsigned fq_scope_parse(const char *s);
/* Name of one scope bit. */
const char *fq_scope_name(unsigned bit);
/* True if the granted bits allow cmd. */
bool fq_cmd_allowed(const fq_cmd_t *cmd, unsigned granted);

/* What a car's refusal of a command means.  The car refuses in its own
 * words on both paths: REST answers {"response":{"result":false,
 * "reason":R}}, a signed command's CarServer reply carries actionStatus
 * ERROR with plain_text R.  Some of these words say the car is already
 * where the command asked (`already_set`, `is_charging` for charge_start):
 * the command succeeded, with R as its reason.  Every other refusal
 * (`disconnected`, `invalid_value`, unknown words) fails it.  This one
 * table decides for both paths (docs/operations.md shows it). */
typedef enum fq_refusal {
  FQ_REFUSAL_FAILED = 0, /* the car did not do it: failed */
  FQ_REFUSAL_DONE = 1,   /* the car already was as asked: succeeded */
} fq_refusal_t;

/* Classify the car's refusal reason for the command named cmd (either may
 * be NULL: failed).  Thread safe. */
fq_refusal_t fq_cmd_refusal(const char *cmd, const char *reason);

/* The reason text of a refusal that failed a command, the same on both
 * paths: "vehicle could not execute the command: R" ("no reason given"
 * when R is empty).  Returns what snprintf returns. */
int fq_cmd_refusal_reason(char *out, size_t cap, const char *reason);

#endif
