/*
 * fleetsim: an in-process simulator of Tesla's Fleet API and of the cars
 * and energy sites behind it.  It serves the Fleet API endpoints fleetq
 * uses (signed_command, REST commands, wake_up, vehicle state,
 * fleet_status, users/region, energy-site commands and site_info, the OAuth
 * token endpoint) over HTTP or HTTPS, verifies signed commands exactly as a
 * car does (keys, epochs, clocks, counters, HMAC tags), and injects the
 * failures the real service produces (expired tokens, missing scopes,
 * sleeping cars, unpaired keys, wrong region, rate limits, latency, 5xx,
 * held connections, replies lost after execution).  Every command a car or
 * site executed is recorded once in a ground-truth log that tests read
 * from GET /sim/executions.  The config format is described in
 * docs/fleetsim.md.
 *
 * Threads: the server runs on libmicrohttpd's internal threads plus one
 * timer thread for delayed replies.  fq_sim_* functions other than
 * fq_sim_port() must be called from one controlling thread.
 */
#ifndef FQ_SIM_H
#define FQ_SIM_H

#include <stdint.h>

#include "fleetq/error.h"

typedef struct fq_sim fq_sim_t;

/* Build a simulator from the JSON config file at config_path.  Relative
 * file names inside the config (fleet_public_key, key files) are resolved
 * against the config file's directory.  Returns NULL with err filled
 * (FQ_ECONFIG, FQ_EKEYFILE, -errno) on failure.  The caller owns the
 * result and frees it with fq_sim_destroy(). */
fq_sim_t *fq_sim_new(const char *config_path, fq_err_t *err);

/* Same from an already parsed config (a jansson json_t *, borrowed: the
 * simulator keeps its own reference).  base_dir resolves relative file
 * names; NULL means the current directory. */
struct json_t;
fq_sim_t *fq_sim_new_json(struct json_t *config, const char *base_dir, fq_err_t *err);

/* Add n generated vehicles (VINs "SIMGEN" + 11 digits, paired, awake,
 * modern) to every account of the config, for load tests.  Call before
 * fq_sim_start().  Returns 0 or -ENOMEM. */
int fq_sim_gen_vehicles(fq_sim_t *sim, uint32_t n, fq_err_t *err);

/* Listen on host:port (port 0 = an ephemeral port; read it back with
 * fq_sim_port()) and start serving.  With tls_cert_path and tls_key_path
 * (PEM files; both or neither) the server speaks HTTPS.  Returns 0,
 * FQ_ECONFIG (bad address, TLS unsupported, unreadable PEM) or
 * FQ_EINTERNAL when the server could not start. */
int fq_sim_start(fq_sim_t *sim, const char *host, uint16_t port, const char *tls_cert_path,
                 const char *tls_key_path, fq_err_t *err);

/* The bound TCP port after a successful fq_sim_start(), else 0.  Thread
 * safe. */
uint16_t fq_sim_port(const fq_sim_t *sim);

/* Stop serving (pending delayed replies are dropped), free everything and
 * set *sim to NULL.  Accepts NULL and a pointer to NULL. */
void fq_sim_destroy(fq_sim_t **sim);

#endif
