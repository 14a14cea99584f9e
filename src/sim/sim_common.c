/*
 * What the simulator's modules share below the world: the string map
 * (owned string keys to borrowed pointers, on the base hash table), the
 * run-time side of injected failures (draws, rate-limit windows, latency)
 * and the ground-truth log of executed commands.  It calls nothing else in
 * src/sim, so sim_config.c, sim_account.c, sim_vehicle.c and sim_site.c
 * can all use it without calling each other in a circle.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_int.h"
#include "util.h"

/* ---- string map ------------------------------------------------------------ */

typedef struct map_ent {
  char *key; /* owned copy */
  void *val; /* borrowed */
} map_ent_t;

/* A (pointer, length) key, as lookups get it. */
typedef struct map_key {
  const char *p;
  size_t n;
} map_key_t;

static bool map_eq(const void *item, const void *key) {
  const map_ent_t *e = item;
  const map_key_t *k = key;
  return strncmp(e->key, k->p, k->n) == 0 && e->key[k->n] == '\0';
}

static map_ent_t *map_find(const fq__sim_map_t *m, const char *key, size_t len) {
  map_key_t k = {key, len};
  return fq_hmap_find(&m->h, fq_hash64(key, len), map_eq, &k);
}

int fq__sim_map_put(fq__sim_map_t *m, const char *key, void *val) {
  /* A zeroed map is empty: give it its item size on first use. */
  if (!m->h.stride) fq_hmap_init(&m->h, sizeof(map_ent_t), 50);
  size_t n = strlen(key);
  map_ent_t *e = map_find(m, key, n);
  if (e) {
    e->val = val;
    return 0;
  }
  char *copy = strdup(key);
  if (!copy) return -ENOMEM;
  if (!(e = fq_hmap_add(&m->h, fq_hash64(key, n)))) {
    free(copy);
    return -ENOMEM;
  }
  e->key = copy;
  e->val = val;
  return 0;
}

void *fq__sim_map_get(const fq__sim_map_t *m, const char *key, size_t len) {
  map_ent_t *e = map_find(m, key, len);
  return e ? e->val : NULL;
}

void fq__sim_map_del(fq__sim_map_t *m, const char *key) {
  map_ent_t *e = map_find(m, key, strlen(key));
  if (!e) return;
  free(e->key);
  fq_hmap_del(&m->h, e);
}

size_t fq__sim_map_count(const fq__sim_map_t *m) { return fq_hmap_count(&m->h); }

void fq__sim_map_free(fq__sim_map_t *m, void (*free_val)(void *)) {
  size_t pos = 0;
  for (map_ent_t *e; (e = fq_hmap_each(&m->h, &pos));) {
    if (free_val) free_val(e->val);
    free(e->key);
  }
  fq_hmap_free(&m->h);
}

/* ---- injected failures ------------------------------------------------------ */

bool fq__sim_inject_fire(fq__sim_inject_t *in, fq_rng_t *rng) {
  if (in->next > 0) {
    in->next--;
    return true;
  }
  if (in->prob > 0) return fq_rng_unit(rng) < in->prob;
  return false;
}

bool fq__sim_rate_limited(fq__sim_faults_t *f, int64_t now_ms) {
  if (f->rl_limit <= 0) return false;
  if (now_ms - f->rl_start_ms >= f->rl_window_ms) {
    f->rl_start_ms = now_ms;
    f->rl_count = 0;
  }
  if (f->rl_count >= f->rl_limit) return true;
  f->rl_count++;
  return false;
}

int64_t fq__sim_latency(fq__sim_faults_t *f) {
  int64_t ms = f->latency_ms;
  if (f->jitter_ms > 0) ms += (int64_t)fq_rng_below(&f->rng, (uint64_t)f->jitter_ms + 1);
  return ms;
}

/* ---- execution log ---------------------------------------------------------- */

void fq__sim_exec_record(fq__sim_world_t *w, const char *device, bool site, int domain,
                         uint32_t counter, const char *command, const uint8_t *payload,
                         size_t len) {
  w->exec_seq++;
  if (w->nexecs >= w->max_execs) {
    /* The log is full: count what could not be kept so /sim/executions can
     * say it is incomplete rather than silently lie. */
    w->execs_dropped++;
    return;
  }
  if (w->nexecs == w->execs_alloc) {
    size_t n = w->execs_alloc ? w->execs_alloc * 2 : 1024;
    fq__sim_exec_t *p = realloc(w->execs, n * sizeof *p);
    if (!p) {
      w->execs_dropped++;
      return;
    }
    w->execs = p;
    w->execs_alloc = n;
  }
  fq__sim_exec_t *e = &w->execs[w->nexecs];
  memset(e, 0, sizeof *e);
  e->seq = w->exec_seq;
  e->at_ms = fq_now_ms();
  snprintf(e->device, sizeof e->device, "%s", device);
  e->site = site;
  e->domain = domain;
  e->counter = counter;
  snprintf(e->command, sizeof e->command, "%s", command);
  e->payload_hex = malloc(len * 2 + 1);
  if (!e->payload_hex) {
    w->execs_dropped++;
    return;
  }
  fq_hex_encode(payload, len, e->payload_hex);
  w->nexecs++;
}
