/*
 * Internals shared by the simulator's modules (sim.c, sim_config.c,
 * sim_account.c, sim_vehicle.c, sim_site.c, sim_common.c) and its unit
 * tests.  Nothing
 * outside src/sim*.c and tests/unit/test_sim*.c may include this header.
 *
 * Locking: all simulated state (accounts, tokens, vehicles, sites, the
 * execution log) is guarded by the one mutex in fq__sim_world_t, which the
 * HTTP handlers hold while they read or change it.  Nothing in here blocks
 * on I/O while holding it.
 */
#ifndef FQ_SIM_INT_H
#define FQ_SIM_INT_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleetq/buf.h"
#include "fleetq/error.h"
#include "hmap.h"
#include "rng.h"
#include "vcp.h"
#include "vcp_car.h"

#define FQ__SIM_MAX_ID 64        /* account ids, VINs, tokens are shorter */
#define FQ__SIM_MAX_TOKEN 2048   /* JWT-shaped access tokens */
#define FQ__SIM_MAX_KEYS 8       /* client keys with a session per domain */
#define FQ__SIM_MAX_BODY (64 * 1024)
#define FQ__SIM_MAX_NAME 64      /* vehicle name */

/* ---- string map (sim_common.c) ---------------------------------------------- */

/* String-keyed map on the base hash table: keys are copied, values are
 * borrowed pointers.  A zeroed map is empty. */
typedef struct fq__sim_map {
  fq_hmap_t h;
} fq__sim_map_t;

/* Set key's value (replacing an old one).  0 or -ENOMEM. */
int fq__sim_map_put(fq__sim_map_t *m, const char *key, void *val);
/* The value of the len-byte key, or NULL. */
void *fq__sim_map_get(const fq__sim_map_t *m, const char *key, size_t len);
void fq__sim_map_del(fq__sim_map_t *m, const char *key);
size_t fq__sim_map_count(const fq__sim_map_t *m);
/* Free the keys (and each value with free_val when not NULL); the map is
 * empty again. */
void fq__sim_map_free(fq__sim_map_t *m, void (*free_val)(void *));

/* ---- injected failures ---------------------------------------------------- */

/* One failure that fires for the next `next` requests, else with
 * probability `prob` (drawn from the owner's seeded generator). */
typedef struct fq__sim_inject {
  int64_t next;
  double prob;
} fq__sim_inject_t;

/* Failure scenario of one account, vehicle or site. */
typedef struct fq__sim_faults {
  fq_rng_t rng;                   /* seeded from the world's seed and the id */
  int64_t latency_ms, jitter_ms;  /* added before every answer */
  fq__sim_inject_t http429, http503, http500, hold, drop, fault;
  fq__sim_inject_t http451, mobile_off; /* account-wide refusals (no execution) */
  fq__sim_inject_t garble;        /* "garbled_reply": executed, reply unreadable */
  fq__sim_inject_t plaintext;     /* "plaintext_reply": executed, reply not encrypted */
  fq__sim_inject_t protocol;      /* "protocol_required": 403 to REST commands, wake_up */
  fq__sim_inject_t info_back;     /* "session_info_clock_back" */
  fq__sim_inject_t info_late;     /* "session_info_late" */
  int64_t info_back_s;            /* how far back that session info's clock reads */
  int64_t info_late_ms;           /* how late an answer with session info comes */
  int64_t hold_ms;                /* "hold": keep the connection, then close */
  int drop_status;                /* "drop_reply": 500 / 504, 0 = close */
  int64_t drop_delay_ms;
  int fault_code;                 /* "fault": MessageFault_E to answer */
  int64_t retry_after_s;          /* Retry-After of every 429 */
  int64_t rl_limit, rl_window_ms; /* "limit N requests per window" */
  int64_t rl_start_ms, rl_count;
} fq__sim_faults_t;

/* Apply a JSON scenario object ("latency", "rate_limit", "fail", "seed")
 * onto f (sim_config.c).  Returns 0 or FQ_ECONFIG with err naming the
 * field. */
int fq__sim_faults_apply(fq__sim_faults_t *f, const json_t *obj, const char *who, fq_err_t *err);

/* The rest of this section is in sim_common.c. */
/* Draw one injection: true if it fires now (consumes a "next"). */
bool fq__sim_inject_fire(fq__sim_inject_t *in, fq_rng_t *rng);
/* Rate-limit bookkeeping for one request at now_ms: true when it is over
 * the limit (429). */
bool fq__sim_rate_limited(fq__sim_faults_t *f, int64_t now_ms);
/* Latency to add now, in ms (fixed + uniform jitter). */
int64_t fq__sim_latency(fq__sim_faults_t *f);

/* ---- entities ------------------------------------------------------------- */

typedef struct fq__sim_token {
  size_t acct;
  uint32_t gen;
  int64_t exp_ms; /* 0 = no expiry */
} fq__sim_token_t;

typedef struct fq__sim_account {
  char id[FQ__SIM_MAX_ID];
  char *token;             /* the configured access token (also in tok_map) */
  char *refresh;           /* current refresh token; single use */
  char **issued;           /* tokens issued by refresh, oldest first */
  size_t nissued;
  unsigned scopes;         /* FQ_SCOPE_* bits */
  json_t *scope_names;     /* array of scope names, for the JWT */
  char region[8];
  char *base_url;          /* where 421 sends this account, NULL = default */
  bool unregistered;       /* "registered": false: 412 to vehicle and energy requests */
  int64_t fleet_status_status; /* "fleet_status_status": fleet_status answers this HTTP
                                  status (an error), 0 = normally */
  uint32_t gen, min_gen;   /* tokens with gen < min_gen are expired */
  int64_t expires_in_s;
  uint32_t refresh_seq;
  size_t *vehicles;        /* indices into world.vehicles */
  size_t nvehicles;
  uint64_t *sites;
  size_t nsites;
  fq__sim_faults_t faults;
} fq__sim_account_t;

enum { FQ__SIM_VCSEC = 0, FQ__SIM_INFO = 1 };

/* A charge or precondition schedule a car holds (precondition schedules
 * use `start` as their time and leave the end fields unused). */
#define FQ__SIM_MAX_SCHED 8
typedef struct fq__sim_sched {
  int64_t id;
  int days, start, end;
  bool start_enabled, end_enabled, one_time, enabled;
  double lat, lon;
} fq__sim_sched_t;

typedef struct fq__sim_vehicle {
  char vin[FQ__SIM_MAX_ID];
  uint64_t id;
  size_t idx;              /* index in world.vehicles */
  bool paired;             /* the fleet key is on the whitelist */
  uint8_t (*extra_keys)[65];/* more paired client keys */
  size_t nextra;
  bool asleep, offline, legacy;
  int64_t wake_ms;         /* how long a wake_up takes */
  int64_t wake_at_ms;      /* when a pending wake completes, 0 = none */
  int asleep_status;       /* 408 or 503: what commands to an asleep car get */
  int64_t infotainment_lag_ms; /* INFOTAINMENT answers 408 this long after waking */
  int64_t online_at_ms;    /* when the last wake completed, 0 = none */
  uint64_t wake_ups;       /* wake_up requests received */
  /* Per domain (FQ__SIM_VCSEC, FQ__SIM_INFO): the car's key and its
   * verifier, both created on first use so that 10,000s of idle cars cost
   * no key generation. */
  fq_vcp_key_t *key[2];
  fq_vcp_vdomain_t *vd[2];
  /* car state */
  char name[FQ__SIM_MAX_NAME + 1];
  bool locked, remote_start, ft_open, rt_open, sentry, port_open, cable;
  bool climate_on, precond_max, cop_on, cop_fan_only, sched_on;
  char windows[8];         /* "closed" / "vented" */
  char charging[16];       /* "Disconnected" / "Stopped" / "Charging" */
  char charge_mode[16];    /* "standard" / "max_range" */
  int charge_limit, charge_amps, charge_amps_max, battery_level, sched_time;
  double driver_temp, passenger_temp;
  uint32_t honks, flashes;
  /* issue 16 state */
  int keeper;              /* climate keeper: 0 off, 1 on, 2 dog, 3 camp */
  int cop_temp;            /* COP activation temperature: 1 low, 2 medium, 3 high */
  bool bioweapon, wheel_heater, auto_seat[2];
  int seat_heat[9];        /* 0..3 per seat, in the order of seat_position */
  int seat_cool[2];        /* front left / right: 1 off .. 4 high */
  bool valet, valet_pin_set, pin_to_drive, guest, speed_limit_on, speed_pin_set;
  char speed_pin[5];
  double speed_limit_mph;
  char sunroof[8];         /* "closed" / "vent" / "open" */
  uint32_t homelinks;
  char *nav_dest;          /* last navigation_request destination (heap), NULL = none */
  uint32_t nav_requests;
  int64_t update_at_ms;    /* when the scheduled software update installs, 0 = none */
  bool playing;
  double volume;           /* 0..10 */
  int track, fav;
  bool dep_on;             /* scheduled departure */
  int dep_time, dep_off_peak_end, dep_pre, dep_off; /* policies: 0 off, 1 all week, 2 weekdays */
  fq__sim_sched_t charge_sched[FQ__SIM_MAX_SCHED], pre_sched[FQ__SIM_MAX_SCHED];
  size_t ncharge_sched, npre_sched;
  size_t *accounts;        /* accounts holding this VIN */
  size_t naccounts;
  fq__sim_faults_t faults;
} fq__sim_vehicle_t;

typedef struct fq__sim_site {
  uint64_t id;
  int backup_reserve, off_grid_reserve;
  char mode[32];           /* default_real_mode */
  bool storm, disallow_grid_charge;
  char export_rule[16];
  json_t *tou;             /* tou_settings as last set, or NULL */
  size_t *accounts;
  size_t naccounts;
  fq__sim_faults_t faults;
} fq__sim_site_t;

/* One executed command, recorded once. */
typedef struct fq__sim_exec {
  uint64_t seq;
  int64_t at_ms;
  char device[FQ__SIM_MAX_ID]; /* VIN, or site id in decimal */
  bool site;
  int domain;                  /* 2, 3, or 0 for REST / sites */
  uint32_t counter;
  char command[48];
  char *payload_hex;           /* protobuf or JSON body bytes, hex */
} fq__sim_exec_t;

typedef struct fq__sim_world {
  pthread_mutex_t mu;
  json_t *config;          /* the config as loaded, for /sim/reset */
  char *base_dir;
  uint64_t seed;           /* config "seed" (default 1), logged at start */
  char region[8];          /* the region this server is */
  json_t *base_urls;       /* region -> base URL */
  /* GET /api/1/partner_accounts/public_key: domain -> the registered key
   * (130 lower-case hex digits).  NULL: no "partner_keys" in the config,
   * so every domain answers the fleet_public_key the cars pair with. */
  json_t *partner_keys;
  uint8_t fleet_pub[65];   /* the fleet's client key, uncompressed */
  bool have_fleet_pub;
  int64_t default_wake_ms;
  fq__sim_account_t *accounts;
  size_t naccounts;
  fq__sim_vehicle_t **vehicles;
  size_t nvehicles;
  fq__sim_site_t **sites;
  size_t nsites;
  fq__sim_map_t vin_map;   /* VIN -> fq__sim_vehicle_t* */
  fq__sim_map_t tok_map;   /* access token -> fq__sim_token_t* */
  fq__sim_map_t ref_map;   /* refresh token -> fq__sim_account_t* */
  uint32_t gen_vehicles;   /* --gen-vehicles count, survives reset */
  uint8_t jwt_key[32];
  fq__sim_exec_t *execs;
  size_t nexecs, execs_alloc, max_execs;
  uint64_t exec_seq, execs_dropped;
  /* counters for /sim/stats */
  uint64_t st_requests, st_signed_ok, st_signed_fault, st_handshakes, st_rest;
  uint64_t st_fleet_status, st_fleet_status_vins; /* requests, VINs asked in them */
  /* deterministic nonce for tests: when set, encrypted replies use it */
  bool fixed_nonce;
  uint8_t nonce[12];
} fq__sim_world_t;

/* ---- sim_config.c --------------------------------------------------------- */

/* Build the world from config (kept referenced).  Returns 0 or
 * FQ_ECONFIG / FQ_EKEYFILE / -ENOMEM. */
int fq__sim_world_load(fq__sim_world_t *w, json_t *config, const char *base_dir, fq_err_t *err);
/* Free everything load built (not the mutex). */
void fq__sim_world_clear(fq__sim_world_t *w);
/* Append n generated vehicles to every account. */
int fq__sim_world_gen(fq__sim_world_t *w, uint32_t n, fq_err_t *err);
/* Apply a JSON patch to one entity (same keys as the config). */
int fq__sim_vehicle_apply(fq__sim_world_t *w, fq__sim_vehicle_t *v, const json_t *o, fq_err_t *err);
int fq__sim_account_apply(fq__sim_world_t *w, fq__sim_account_t *a, const json_t *o, fq_err_t *err);
int fq__sim_site_apply(fq__sim_world_t *w, fq__sim_site_t *s, const json_t *o, fq_err_t *err);
fq__sim_site_t *fq__sim_site_find(fq__sim_world_t *w, uint64_t id);
fq__sim_account_t *fq__sim_account_find(fq__sim_world_t *w, const char *id_or_token);

/* ---- execution log (sim_common.c) ------------------------------------------- */

/* Record an execution; payload is copied as hex. */
void fq__sim_exec_record(fq__sim_world_t *w, const char *device, bool site, int domain,
                         uint32_t counter, const char *command, const uint8_t *payload,
                         size_t len);

/* ---- sim_account.c -------------------------------------------------------- */

/* Resolve a bearer token: 0 with *acct set; FQ_EAUTH when unknown,
 * FQ_EEXPIRED when expired. */
int fq__sim_auth(fq__sim_world_t *w, const char *token, fq__sim_account_t **acct);
/* Register a token for account index ai with the given generation/expiry. */
int fq__sim_token_add(fq__sim_world_t *w, const char *token, size_t ai, uint32_t gen,
                      int64_t exp_ms);
/* The OAuth token endpoint: form body in, JSON reply out (status in
 * *status). */
int fq__sim_oauth_token(fq__sim_world_t *w, const char *form, size_t len, int *status,
                        fq_buf_t *out);
/* True if the account may act on the vehicle / site. */
bool fq__sim_account_has_vehicle(const fq__sim_account_t *a, const fq__sim_vehicle_t *v,
                                 size_t ai);
bool fq__sim_account_has_site(const fq__sim_account_t *a, uint64_t site);
/* Scope check for a command name on a device type (see commands.h);
 * fallback bits are used when the table does not know the name. */
bool fq__sim_scope_ok(const fq__sim_account_t *a, const char *cmd, int devtype,
                      unsigned fallback);

/* ---- sim_vehicle.c -------------------------------------------------------- */

/* What a signed_command produced. */
typedef struct fq__sim_signed_result {
  bool executed;           /* a command ran (recorded in the log) */
  int fault;               /* MessageFault_E of the reply, 0 = none */
  bool session_info;       /* a command's (fault) reply carries session info */
  char command[48];        /* command name when recognised */
} fq__sim_signed_result_t;

/* How the car shapes its answer to one signed command: the injected
 * failures drawn for it (none for handshakes). */
typedef struct fq__sim_reply_opts {
  bool garble;             /* "garbled_reply": authentic reply that does not decode */
  bool plaintext;          /* "plaintext_reply": the answer in clear, no AES-GCM */
  int64_t info_back_ms;    /* "session_info_clock_back": session info in a fault
                            * reply reads the car's clock this much earlier */
} fq__sim_reply_opts_t;

/* The command name carried by a RoutableMessage's payload, decoded only
 * (no verification), so the server can check scopes first.  Returns 0 and
 * fills name ("" for a handshake), or FQ_EPROTO. */
int fq__sim_peek_command(const uint8_t *msg, size_t len, char *name, size_t cap, int *domain);
/* Process one RoutableMessage addressed to v as the car would: handshake,
 * verify, execute, reply.  The reply RoutableMessage is appended to out.
 * opts may be NULL (a plain answer).  Returns 0, or FQ_EPROTO when the
 * bytes are not a RoutableMessage (HTTP 400). */
int fq__sim_vehicle_signed(fq__sim_world_t *w, fq__sim_vehicle_t *v, const uint8_t *msg,
                           size_t len, const fq__sim_reply_opts_t *opts, fq_buf_t *out,
                           fq__sim_signed_result_t *res);
/* Execute a REST command on a legacy car: JSON params in, reply
 * {"result":bool,"reason":...} appended to out.  Returns 0, FQ_EUNKCMD,
 * FQ_EBADPARAM (HTTP 400, err filled). */
int fq__sim_vehicle_rest(fq__sim_world_t *w, fq__sim_vehicle_t *v, const char *name,
                         const json_t *params, fq_buf_t *out, fq_err_t *err);
/* Current "state" string ("online", "asleep", "offline"), completing a
 * pending wake when its time has come. */
const char *fq__sim_vehicle_state(fq__sim_vehicle_t *v, int64_t now_ms);
/* The vehicle JSON for GET /api/1/vehicles/{vin} (new reference). */
json_t *fq__sim_vehicle_json(fq__sim_vehicle_t *v, int64_t now_ms);
/* Reset the car state to defaults (used by load and reset). */
void fq__sim_vehicle_defaults(fq__sim_vehicle_t *v);
/* The verifier of domain d (FQ__SIM_VCSEC / FQ__SIM_INFO), created (key,
 * epoch, pairing of the fleet key and paired_keys) on first use.  NULL on
 * a crypto or memory failure. */
fq_vcp_vdomain_t *fq__sim_vehicle_vd(fq__sim_world_t *w, fq__sim_vehicle_t *v, int d);
/* Bring the verifiers in line with v->paired / extra keys after a patch. */
void fq__sim_vehicle_repair(fq__sim_world_t *w, fq__sim_vehicle_t *v);
/* Free the domain keys. */
void fq__sim_vehicle_free(fq__sim_vehicle_t *v);

/* ---- sim_site.c ----------------------------------------------------------- */

/* Execute an energy-site command (endpoint suffix `what`): 0 with the
 * reply in out; FQ_EUNKCMD (404) or FQ_EBADPARAM (400, err filled). */
int fq__sim_site_command(fq__sim_world_t *w, fq__sim_site_t *s, const char *what,
                         const json_t *body, const char *raw, size_t rawlen, fq_buf_t *out,
                         fq_err_t *err);
json_t *fq__sim_site_json(const fq__sim_site_t *s);
void fq__sim_site_defaults(fq__sim_site_t *s);

#endif
