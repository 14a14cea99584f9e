/*
 * fleetq-replay gen: synthetic traffic.  Every record is a valid submit
 * (commands and parameter values drawn from the command table, so the
 * daemon accepts all of them), sent to one of D devices chosen by a Zipf
 * or uniform law, at an average rate with optional periodic bursts, with a
 * share of exact duplicates (a client retrying with the same key) and a
 * share of energy-site commands.  The same seed gives the same file.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fleetq/client.h"
#include "cliopt.h"
#include "fleetq/commands.h"
#include "replay.h"
#include "rng.h"
#include "traffic.h"

#define GEN_MAX_DEVICES 10000000ULL
#define GEN_MAX_MIX 64
/* Duplicates repeat one of the last DUP_WINDOW records, as a client
 * retrying after a lost reply would. */
#define DUP_WINDOW 1024

typedef struct mix_entry {
  const fq_cmd_t *cmd;
  double weight;
} mix_entry_t;

typedef struct mix {
  mix_entry_t e[GEN_MAX_MIX];
  size_t n;
  double total;
} mix_t;

/* Defaults: roughly what a charging / fleet-management platform sends. */
static const struct {
  const char *name;
  double w;
} g_default_vehicle[] = {
    {"set_charge_limit", 20}, {"charge_start", 12},       {"charge_stop", 8},
    {"set_charging_amps", 5}, {"auto_conditioning_start", 10}, {"auto_conditioning_stop", 5},
    {"set_temps", 8},         {"door_lock", 10},          {"door_unlock", 6},
    {"set_sentry_mode", 5},   {"flash_lights", 3},        {"honk_horn", 2},
    {"wake_up", 4},           {"actuate_trunk", 2},
};
static const struct {
  const char *name;
  double w;
} g_default_site[] = {
    {"backup", 40}, {"operation", 20}, {"storm_mode", 15}, {"grid_import_export", 10},
    {"off_grid_vehicle_charging_reserve", 10}, {"time_of_use_settings", 5},
};

static void mix_add(mix_t *m, const fq_cmd_t *c, double w) {
  m->e[m->n].cmd = c;
  m->e[m->n].weight = w;
  m->n++;
  m->total += w;
}

static const fq_cmd_t *mix_pick(const mix_t *m, fq_rng_t *r) {
  double x = fq_rng_unit(r) * m->total;
  for (size_t i = 0; i < m->n; i++) {
    if (x < m->e[i].weight) return m->e[i].cmd;
    x -= m->e[i].weight;
  }
  return m->e[m->n - 1].cmd;
}

/* Cumulative distribution over n devices: Zipf with exponent s (rank k has
 * weight 1/k^s), or uniform when s == 0 (then no table is needed). */
typedef struct devlaw {
  uint64_t n;
  double *cdf;
} devlaw_t;

static int devlaw_init(devlaw_t *d, uint64_t n, double s) {
  d->n = n;
  d->cdf = NULL;
  if (s == 0 || n == 0) return 0;
  d->cdf = malloc(n * sizeof *d->cdf);
  if (!d->cdf) return -ENOMEM;
  double acc = 0;
  for (uint64_t k = 0; k < n; k++) {
    acc += 1.0 / pow((double)(k + 1), s);
    d->cdf[k] = acc;
  }
  for (uint64_t k = 0; k < n; k++) d->cdf[k] /= acc;
  return 0;
}

static uint64_t devlaw_pick(const devlaw_t *d, fq_rng_t *r) {
  if (!d->cdf) return fq_rng_below(r, d->n);
  double u = fq_rng_unit(r);
  uint64_t lo = 0, hi = d->n - 1;
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    if (d->cdf[mid] > u)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

static const char g_vin_chars[] = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789";

/* A well-formed, deterministic VIN for vehicle number k (the same scheme
 * as the integration tests' harness: base-33 digits after a fixed
 * prefix). */
static void vin_of(uint64_t k, char out[18]) {
  memcpy(out, "5YJ3E1EA", 8);
  for (int i = 16; i >= 8; i--) {
    out[i] = g_vin_chars[k % 33];
    k /= 33;
  }
  out[17] = 0;
}

/* A small time-of-use tariff: {"tariff_content_v2": {"version": 1}}. */
static const uint8_t g_tou[] = {0x81, 0xb1, 't', 'a', 'r', 'i', 'f', 'f', '_', 'c', 'o',
                                'n',  't',  'e', 'n', 't', '_', 'v', '2', 0x81, 0xa7, 'v',
                                'e',  'r',  's', 'i', 'o', 'n', 0x01};

/* navigation_request's value: {"android.intent.extra.TEXT": "Home"}. */
static const uint8_t g_share[] = {0x81, 0xb9, 'a', 'n', 'd', 'r', 'o', 'i', 'd', '.', 'i', 'n',
                                  't',  'e',  'n', 't', '.', 'e', 'x', 't', 'r', 'a', '.', 'T',
                                  'E',  'X',  'T', 0xa4, 'H', 'o', 'm', 'e'};

/* Draw valid parameters for cmd into pv (strings point into `names`,
 * which the caller keeps alive while the record is encoded). */
static size_t draw_params(const fq_cmd_t *cmd, fq_rng_t *r, fq_pval_t *pv, char *names,
                          size_t names_cap) {
  size_t n = 0;
  for (size_t i = 0; i < cmd->nparams && n < FQ_MAX_PARAMS; i++) {
    const fq_param_spec_t *sp = &cmd->params[i];
    /* A rule across parameters may need an optional one: send them all. */
    if (!sp->required && !cmd->check && fq_rng_unit(r) < 0.5) continue;
    fq_pval_t *p = &pv[n];
    memset(p, 0, sizeof *p);
    p->name = sp->name;
    p->name_len = strlen(sp->name);
    p->type = sp->type;
    switch (sp->type) {
    case FQ_PT_BOOL: p->v.b = fq_rng_next(r) & 1; break;
    case FQ_PT_INT:
      p->v.i = (int64_t)sp->min + (int64_t)fq_rng_below(r, (uint64_t)(sp->max - sp->min) + 1);
      break;
    case FQ_PT_FLOAT: {
      /* Half steps, as a person sets a temperature. */
      uint64_t steps = (uint64_t)((sp->max - sp->min) * 2);
      p->v.f = sp->min + (double)fq_rng_below(r, steps + 1) / 2.0;
      break;
    }
    case FQ_PT_STR:
      if (sp->choices) {
        size_t nc = 0;
        while (sp->choices[nc]) nc++;
        const char *c = sp->choices[fq_rng_below(r, nc)];
        p->v.s.p = c;
        p->v.s.n = strlen(c);
      } else if (sp->check) {
        /* A string with a further rule (a PIN, a day list): one of the
         * values its spec names as accepted. */
        const char *c = sp->examples[fq_rng_below(r, 2)];
        p->v.s.p = c;
        p->v.s.n = strlen(c);
      } else {
        int len = snprintf(names, names_cap, "car %" PRIu64, fq_rng_below(r, 100000));
        if (len < 1 || (size_t)len > sp->max_len) len = 1;
        p->v.s.p = names;
        p->v.s.n = (size_t)len;
      }
      break;
    case FQ_PT_MAP:
      if (strcmp(sp->name, "value") == 0) {
        p->v.raw.p = g_share;
        p->v.raw.n = sizeof g_share;
      } else {
        p->v.raw.p = g_tou;
        p->v.raw.n = sizeof g_tou;
      }
      break;
    }
    n++;
  }
  /* grid_import_export wants at least one of its optional parameters. */
  if (n == 0 && cmd->need_any_param && cmd->nparams) {
    pv[0] = (fq_pval_t){.name = cmd->params[0].name, .name_len = strlen(cmd->params[0].name),
                        .type = FQ_PT_BOOL, .v.b = true};
    if (cmd->params[0].type != FQ_PT_BOOL) {
      pv[0].type = FQ_PT_STR;
      pv[0].v.s.p = cmd->params[0].choices[0];
      pv[0].v.s.n = strlen(pv[0].v.s.p);
    }
    n = 1;
  }
  return n;
}

/* Parse "name=weight,name=weight" into the vehicle and site mixes. */
static int parse_mix(const char *spec, mix_t *veh, mix_t *site) {
  char *copy = strdup(spec), *save = NULL;
  int rc = 0;
  if (!copy) return 1;
  for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(tok, '=');
    double w = 1;
    if (eq) {
      *eq = 0;
      if (!fq_replay_parse_double(eq + 1, 0, 1e9, &w)) {
        rc = fq_replay_usage_err("gen", "--mix: weight of '%s' is not a number >= 0", tok);
        break;
      }
    }
    const fq_cmd_t *c = fq_cmd_find(tok, strlen(tok), FQ_DEV_VEHICLE, NULL);
    mix_t *m = veh;
    if (!c) {
      c = fq_cmd_find(tok, strlen(tok), FQ_DEV_SITE, NULL);
      m = site;
    }
    if (!c) {
      rc = fq_replay_usage_err("gen", "--mix: '%s' is not a command of the command table", tok);
      break;
    }
    if (m->n == GEN_MAX_MIX) {
      rc = fq_replay_usage_err("gen", "--mix: more than %d commands", GEN_MAX_MIX);
      break;
    }
    if (w > 0) mix_add(m, c, w);
  }
  free(copy);
  return rc;
}

enum {
  G_OUT = 1000, G_COUNT, G_DEVICES, G_RATE, G_ARRIVAL, G_MIX, G_ZIPF, G_UNIFORM, G_BURST,
  G_DUP, G_ENERGY, G_SEED, G_TENANT, G_ACCOUNT, G_KEYPFX, G_TTL, G_HELP, G_VERSION, G_JSON
};

/* The options of gen: they parse the command line and make its --help. */
static const fq_opt_t g_gen_opts[] = {
    FQ_OPT_HELP(G_HELP),
    FQ_OPT_VERSION(G_VERSION),
    {"out", 0, "FILE", G_OUT, "the traffic file to write (required)"},
    {"count", 0, "N", G_COUNT, "how many records (required)"},
    {"devices", 0, "D", G_DEVICES, "how many devices (required)"},
    {"rate", 0, "R", G_RATE, "average requests per second (default 1000)"},
    {"arrival", 0, "LAW", G_ARRIVAL,
     "poisson (default: exponential gaps, like independent\n"
     "clients) or even (one every 1/R s)"},
    {"mix", 0, "NAME=W,...", G_MIX,
     "command weights, e.g. set_charge_limit=5,door_lock=1;\n"
     "names from the command table (vehicle and site\n"
     "commands may be mixed); default: a charging-platform mix"},
    {"zipf", 0, "S", G_ZIPF, "device popularity: rank k drawn with weight 1/k^S\n(default 1.0)"},
    {"uniform", 0, NULL, G_UNIFORM, "every device alike instead"},
    {"burst", 0, "M:E:L", G_BURST, "every E seconds, for L seconds, send at M times the rate"},
    {"dup-ratio", 0, "X", G_DUP,
     "share of records that repeat an earlier request exactly\n"
     "(same tenant, key and content: a retry), 0..0.9"},
    {"energy-share", 0, "X", G_ENERGY,
     "share of requests for energy sites (default 0); that\n"
     "share of the D devices are sites"},
    {"seed", 0, "N", G_SEED, "random seed (default: from the clock; always logged)"},
    {"tenant", 0, "T", G_TENANT, "the tenant of every record (default replay)"},
    {"account", 0, "A", G_ACCOUNT, "the account of every record (default replay-acct)"},
    {"key-prefix", 0, "P", G_KEYPFX, "idempotency keys are P-<n> (default g<seed>)"},
    {"ttl-ms", 0, "MS", G_TTL, "ttl_ms of every request (default: the daemon's)"},
    {"json", 0, NULL, G_JSON, "print the summary as one JSON object on stdout"},
    {NULL, 0, NULL, 0, NULL},
};

static void gen_help(void) {
  fputs("usage: fleetq-replay gen --out FILE --count N --devices D [--rate R]\n"
        "           [--arrival poisson|even] [--mix name=weight,...] [--zipf S | --uniform]\n"
        "           [--burst MULT:EVERY:LEN] [--dup-ratio X] [--energy-share X] [--seed N]\n"
        "           [--tenant T] [--account A] [--key-prefix P] [--ttl-ms MS] [--json]\n"
        "\n"
        "Write N synthetic submit requests to FILE (a traffic file, see\n"
        "proto/traffic-format.md) for D devices.  The same seed gives the same file.\n"
        "\n"
        "Options:\n",
        stdout);
  fq_opt_print(stdout, g_gen_opts);
  fputs("\nExit status: 0 written, 1 the file could not be written, 2 usage error.\n", stdout);
}

int fq_replay_gen(int argc, char **argv) {
  const char *out = NULL, *mixspec = NULL, *tenant = "replay", *account = "replay-acct";
  const char *keypfx = NULL;
  uint64_t count = 0, devices = 0, seed = 0, ttl = 0;
  double rate = 1000, zipf = 1.0, dup = 0, energy = 0;
  double burst_mult = 1, burst_every = 0, burst_len = 0;
  bool even = false, seed_set = false, zipf_set = false, uniform = false;
  bool json = false;
  fq_opt_parser_t p;
  fq_opt_init(&p, "fleetq-replay gen", g_gen_opts, argc, argv);
  for (;;) {
    int c = fq_opt_next(&p);
    if (c == FQ_OPT_END) break;
    const char *v = p.value;
    switch (c) {
    case FQ_OPT_ERROR: return 2;
    case G_HELP: gen_help(); return 0;
    case G_VERSION: return fq_opt_version("fleetq-replay");
    case G_JSON: json = true; break;
    case G_OUT: out = v; break;
    case G_COUNT:
      if (!fq_replay_parse_u64(v, 1, FQ_TRAFFIC_MAX_RECORDS, &count))
        return fq_replay_usage_err("gen", "--count wants 1..%llu",
                                   (unsigned long long)FQ_TRAFFIC_MAX_RECORDS);
      break;
    case G_DEVICES:
      if (!fq_replay_parse_u64(v, 1, GEN_MAX_DEVICES, &devices))
        return fq_replay_usage_err("gen", "--devices wants 1..%llu",
                                   (unsigned long long)GEN_MAX_DEVICES);
      break;
    case G_RATE:
      if (!fq_replay_parse_double(v, 0.001, 10e6, &rate))
        return fq_replay_usage_err("gen", "--rate wants requests per second, 0.001..1e7");
      break;
    case G_ARRIVAL:
      if (!strcmp(v, "even"))
        even = true;
      else if (strcmp(v, "poisson"))
        return fq_replay_usage_err("gen", "--arrival is poisson or even");
      break;
    case G_MIX: mixspec = v; break;
    case G_ZIPF:
      if (!fq_replay_parse_double(v, 0.01, 5, &zipf))
        return fq_replay_usage_err("gen", "--zipf wants an exponent 0.01..5");
      zipf_set = true;
      break;
    case G_UNIFORM: uniform = true; break;
    case G_BURST:
      if (sscanf(v, "%lf:%lf:%lf", &burst_mult, &burst_every, &burst_len) != 3 ||
          !(burst_mult >= 1 && burst_mult <= 1000) || !(burst_every > 0) ||
          !(burst_len > 0 && burst_len < burst_every))
        return fq_replay_usage_err(
            "gen", "--burst wants MULT:EVERY:LEN, 1 <= MULT <= 1000, 0 < LEN < EVERY seconds");
      break;
    case G_DUP:
      if (!fq_replay_parse_double(v, 0, 0.9, &dup))
        return fq_replay_usage_err("gen", "--dup-ratio wants 0..0.9");
      break;
    case G_ENERGY:
      if (!fq_replay_parse_double(v, 0, 1, &energy))
        return fq_replay_usage_err("gen", "--energy-share wants 0..1");
      break;
    case G_SEED:
      if (!fq_replay_parse_u64(v, 0, UINT64_MAX, &seed))
        return fq_replay_usage_err("gen", "--seed wants an unsigned integer");
      seed_set = true;
      break;
    case G_TENANT: tenant = v; break;
    case G_ACCOUNT: account = v; break;
    case G_KEYPFX: keypfx = v; break;
    case G_TTL:
      if (!fq_replay_parse_u64(v, 1, 86400000, &ttl))
        return fq_replay_usage_err("gen", "--ttl-ms wants 1..86400000");
      break;
    default: return fq_replay_usage_err("gen", "option --%s is not handled", p.opt->name);
    }
  }
  if (p.next < argc) return fq_replay_usage_err("gen", "unexpected argument '%s'", argv[p.next]);
  if (!out || !count || !devices)
    return fq_replay_usage_err("gen", "--out, --count and --devices are required");
  if (zipf_set && uniform) return fq_replay_usage_err("gen", "--zipf and --uniform exclude each other");
  if (uniform) zipf = 0;
  if (!seed_set) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    seed = (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
  }

  mix_t veh = {0}, site = {0};
  if (mixspec && parse_mix(mixspec, &veh, &site)) return 2;
  if (!mixspec) {
    for (size_t i = 0; i < sizeof g_default_vehicle / sizeof g_default_vehicle[0]; i++)
      mix_add(&veh, fq_cmd_find(g_default_vehicle[i].name, strlen(g_default_vehicle[i].name),
                                FQ_DEV_VEHICLE, NULL),
              g_default_vehicle[i].w);
  }
  if (site.n == 0 && energy > 0)
    for (size_t i = 0; i < sizeof g_default_site / sizeof g_default_site[0]; i++)
      mix_add(&site, fq_cmd_find(g_default_site[i].name, strlen(g_default_site[i].name),
                                 FQ_DEV_SITE, NULL),
              g_default_site[i].w);
  /* A mix of site commands only, without --energy-share: all sites. */
  if (mixspec && veh.n == 0 && site.n > 0 && energy == 0) energy = 1;
  if (energy < 1 && veh.n == 0)
    return fq_replay_usage_err("gen", "the mix has no vehicle command but --energy-share < 1");

  uint64_t nsite = (uint64_t)llround((double)devices * energy);
  if (energy > 0 && nsite == 0) nsite = 1;
  if (energy < 1 && nsite >= devices) nsite = devices - 1;
  uint64_t nveh = devices - nsite;
  if ((energy > 0 && nsite == 0) || (energy < 1 && nveh == 0))
    return fq_replay_usage_err("gen", "--devices %" PRIu64 " cannot hold both vehicles and sites",
                               devices);

  char keybuf[160], keyp[96];
  snprintf(keyp, sizeof keyp, "%s", keypfx ? keypfx : "");
  if (!keypfx) snprintf(keyp, sizeof keyp, "g%" PRIu64, seed);

  char note[1024];
  snprintf(note, sizeof note,
           "fleetq-replay gen: seed=%" PRIu64 " count=%" PRIu64 " devices=%" PRIu64
           " (vehicles %" PRIu64 ", sites %" PRIu64 ") rate=%g arrival=%s %s%g burst=%g:%g:%g "
           "dup-ratio=%g energy-share=%g tenant=%s mix=%s",
           seed, count, devices, nveh, nsite, rate, even ? "even" : "poisson",
           zipf > 0 ? "zipf=" : "uniform", zipf > 0 ? zipf : 0.0, burst_mult, burst_every,
           burst_len, dup, energy, tenant, mixspec ? mixspec : "default");
  fprintf(stderr, "fleetq-replay gen: seed %" PRIu64 " (pass --seed %" PRIu64 " to repeat)\n", seed, seed);

  fq_rng_t rng;
  fq_rng_seed(&rng, seed);
  devlaw_t dv = {0}, ds = {0};
  fq_err_t e;
  fq_buf_t body;
  uint8_t **ring = NULL;
  size_t *ringlen = NULL;
  int rc = 1;
  fq_buf_init(&body, FQ_TRAFFIC_MAX_RECORD);
  fq_traffic_writer_t *w = NULL;
  if (devlaw_init(&dv, nveh, zipf) || devlaw_init(&ds, nsite, zipf)) {
    fprintf(stderr, "fleetq-replay gen: out of memory for the device table\n");
    goto out;
  }
  ring = calloc(DUP_WINDOW, sizeof *ring);
  ringlen = calloc(DUP_WINDOW, sizeof *ringlen);
  if (!ring || !ringlen) goto out;
  w = fq_traffic_writer_new(out, 0, note, &e);
  if (!w) {
    fprintf(stderr, "fleetq-replay gen: %s\n", e.msg);
    goto out;
  }
  double t = 0;
  uint64_t dups = 0, sites = 0, written_unique = 0;
  for (uint64_t i = 0; i < count; i++) {
    if (i > 0) {
      double r_now = rate;
      if (burst_every > 0 && fmod(t, burst_every) < burst_len) r_now *= burst_mult;
      t += even ? 1.0 / r_now : -log(1.0 - fq_rng_unit(&rng)) / r_now;
    }
    uint64_t off = (uint64_t)llround(t * 1e6);
    const uint8_t *bp;
    size_t blen;
    if (dup > 0 && written_unique > 0 && fq_rng_unit(&rng) < dup) {
      uint64_t back = fq_rng_below(&rng, written_unique < DUP_WINDOW ? written_unique : DUP_WINDOW);
      size_t slot = (size_t)((written_unique - 1 - back) % DUP_WINDOW);
      bp = ring[slot];
      blen = ringlen[slot];
      dups++;
    } else {
      bool is_site = energy >= 1 || (energy > 0 && fq_rng_unit(&rng) < energy);
      const fq_cmd_t *cmd = mix_pick(is_site ? &site : &veh, &rng);
      fq_pval_t pv[FQ_MAX_PARAMS];
      char names[80];
      size_t np = draw_params(cmd, &rng, pv, names, sizeof names);
      char vin[18];
      snprintf(keybuf, sizeof keybuf, "%s-%" PRIu64, keyp, written_unique);
      fq_submit_args_t a = {.tenant = tenant, .key = keybuf, .account = account,
                            .command = cmd->name, .params = pv, .nparams = np,
                            .ttl_ms = (int64_t)ttl};
      if (is_site) {
        a.site = 100000 + devlaw_pick(&ds, &rng);
        sites++;
      } else {
        vin_of(devlaw_pick(&dv, &rng), vin);
        a.vin = vin;
      }
      fq_buf_reset(&body);
      if (fq_req_submit(&body, &a)) {
        fprintf(stderr, "fleetq-replay gen: record %" PRIu64 " does not fit in %d bytes\n", i,
                FQ_TRAFFIC_MAX_RECORD);
        goto out;
      }
      size_t slot = (size_t)(written_unique % DUP_WINDOW);
      uint8_t *copy = realloc(ring[slot], body.len);
      if (!copy) goto out;
      memcpy(copy, body.data, body.len);
      ring[slot] = copy;
      ringlen[slot] = body.len;
      bp = copy;
      blen = body.len;
      written_unique++;
    }
    if (fq_traffic_write(w, off, bp, blen, &e)) {
      /* tenant / account / key-prefix come from the user: say which. */
      fprintf(stderr, "fleetq-replay gen: record %" PRIu64 " refused: %s\n", i, e.msg);
      goto out;
    }
  }
  if (fq_traffic_writer_close(&w, &e)) {
    fprintf(stderr, "fleetq-replay gen: %s\n", e.msg);
    goto out;
  }
  fprintf(stderr,
          "fleetq-replay gen: wrote %" PRIu64 " records to %s (%" PRIu64 " duplicates, %" PRIu64
          " for energy sites), spanning %.3f s\n",
          count, out, dups, sites, t);
  if (json) {
    fq_buf_t js;
    fq_buf_init(&js, 0);
    fq_buf_append_str(&js, "{\"out\":");
    fq_replay_json_str(&js, out);
    fq_buf_printf(&js,
                  ",\"records\":%" PRIu64 ",\"duplicates\":%" PRIu64 ",\"sites\":%" PRIu64
                  ",\"span_s\":%.6f,\"seed\":%" PRIu64 "}",
                  count, dups, sites, t, seed);
    printf("%.*s\n", (int)js.len, (const char *)js.data);
    fq_buf_free(&js);
  }
  rc = 0;
out:
  fq_traffic_writer_destroy(&w);
  if (ring)
    for (size_t i = 0; i < DUP_WINDOW; i++) free(ring[i]);
  free(ring);
  free(ringlen);
  free(dv.cdf);
  free(ds.cdf);
  fq_buf_free(&body);
  return rc;
}
