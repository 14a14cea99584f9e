/*
 * Fuzz target for the parsers of files an operator or a tool hands to
 * fleetq: traffic files (fq_traffic_open), fleetqd's JSON config file
 * (fq_config_load_file) and the CURVE clients file (fq_clients_load).  Each
 * input is written to a private temporary file and given to all three;
 * the results are checked, not just survived: a refusal carries a message;
 * an accepted traffic file has exactly its counted records, each inside
 * the mapped file and each a valid submit body; an accepted config keeps
 * its settings in range; an accepted clients file has well-formed entries
 * that its own look-up finds again.
 *
 * Built two ways, like fuzz_wire:
 *  - with -DFQ_LIBFUZZER and -fsanitize=fuzzer (cmake -DFQ_FUZZ=ON, clang);
 *  - without it: a plain driver (ctest `fuzz_files_seeds`) that runs seeds
 *    made at start (a real traffic file, config, clients file) and then a
 *    fixed number of deterministic mutations of them from a logged seed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "clients.h"
#include "config.h"
#include "fleetq/buf.h"
#include "fleetq/client.h"
#include "traffic.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...)                                      \
  do {                                                 \
    fprintf(stderr, "fuzz_files: invariant broken: "); \
    fprintf(stderr, __VA_ARGS__);                      \
    fprintf(stderr, "\n");                             \
    abort();                                           \
  } while (0)

static char g_dir[64];
static char g_path[128];

static void setup(void) {
  if (g_dir[0]) return;
  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  snprintf(g_dir, sizeof g_dir, "%s/fq-fuzz-files-XXXXXX", base);
  if (!mkdtemp(g_dir)) FAIL("mkdtemp: %s", fq_strerror(-errno));
  snprintf(g_path, sizeof g_path, "%s/input", g_dir);
}

static void write_input(const uint8_t *data, size_t size) {
  int fd = open(g_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) FAIL("open %s: %s", g_path, fq_strerror(-errno));
  size_t off = 0;
  while (off < size) {
    ssize_t w = write(fd, data + off, size - off);
    if (w <= 0) FAIL("write: %s", fq_strerror(-errno));
    off += (size_t)w;
  }
  fchmod(fd, 0600);
  close(fd);
}

static void refused_with_message(const fq_err_t *err, const char *what) {
  if (!err->msg[0]) FAIL("%s refused without a message", what);
  if (strnlen(err->msg, sizeof err->msg) == sizeof err->msg) FAIL("%s message unterminated", what);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  setup();
  write_input(data, size);
  fq_err_t err;

  /* Traffic file. */
  fq_err_clear(&err);
  fq_traffic_t *t = fq_traffic_open(g_path, &err);
  if (!t) {
    refused_with_message(&err, "traffic file");
  } else {
    size_t n = fq_traffic_count(t);
    if (n > size / FQ_TRAFFIC_REC_HEADER) FAIL("%zu records in %zu bytes", n, size);
    uint64_t last = 0;
    for (size_t i = 0; i < n; i++) {
      const fq_traffic_rec_t *r = fq_traffic_rec(t, i);
      if (!r || r->len > FQ_TRAFFIC_MAX_RECORD) FAIL("record %zu out of bounds", i);
      if (r->offset_us < last) FAIL("record %zu goes back in time", i);
      last = r->offset_us;
      fq_err_t e2;
      fq_err_clear(&e2);
      if (fq_traffic_check_body(r->body, r->len, &e2) != 0)
        FAIL("accepted record %zu is not a valid submit: %s", i, e2.msg);
    }
    if (fq_traffic_rec(t, n) != NULL) FAIL("a record past the count");
    if (strnlen(fq_traffic_note(t), FQ_TRAFFIC_MAX_NOTE + 1) > FQ_TRAFFIC_MAX_NOTE)
      FAIL("note too long");
    fq_traffic_close(&t);
  }

  /* fleetqd config file. */
  fq_config_t *cfg = malloc(sizeof *cfg);
  if (cfg) {
    fq_config_defaults(cfg);
    fq_err_clear(&err);
    if (fq_config_load_file(cfg, g_path, &err) != 0) {
      refused_with_message(&err, "config file");
    } else {
      if (cfg->shards > 64) FAIL("shards %u", cfg->shards);
      if (cfg->batch_max < 1 || cfg->batch_max > 65536) FAIL("batch_max %u", cfg->batch_max);
      if (cfg->map_size_mb < 16) FAIL("map_size_mb %llu", (unsigned long long)cfg->map_size_mb);
      if (strnlen(cfg->data_dir, sizeof cfg->data_dir) == sizeof cfg->data_dir)
        FAIL("data dir unterminated");
      if (cfg->ipc_mode && (cfg->ipc_mode & 0600) != 0600) FAIL("ipc_mode %o", cfg->ipc_mode);
    }
    free(cfg);
  }

  /* CURVE clients file. */
  fq_err_clear(&err);
  fq_clients_t *c = fq_clients_load(g_path, &err);
  if (!c) {
    refused_with_message(&err, "clients file");
  } else {
    for (size_t i = 0; i < fq_clients_count(c); i++) {
      const fq_client_entry_t *e = fq_clients_at(c, i);
      if (strlen(e->key) != 40) FAIL("entry %zu key length %zu", i, strlen(e->key));
      if (fq_clients_find(c, e->key, 40) != e) FAIL("entry %zu not found by its key", i);
      if (!e->roles) FAIL("entry %zu without roles", i);
      if (!e->all_tenants && !e->ntenants) FAIL("entry %zu without tenants", i);
      size_t acl = 0;
      for (size_t k = 0; k < e->ntenants; k++) acl += strlen(e->tenants[k]) + 1;
      if (acl != e->acl_len) FAIL("entry %zu acl length %zu != %zu", i, e->acl_len, acl);
    }
    fq_clients_free(&c);
  }
  return 0;
}

#ifndef FQ_LIBFUZZER
#define MAX_SEED 8192

typedef struct seed {
  uint8_t *p;
  size_t n;
} seed_t;

static seed_t from_text(const char *s) {
  seed_t x = {(uint8_t *)strdup(s), strlen(s)};
  return x;
}

static seed_t from_file(const char *path) {
  seed_t x = {NULL, 0};
  FILE *f = fopen(path, "rb");
  if (!f) return x;
  x.p = malloc(MAX_SEED);
  if (x.p) x.n = fread(x.p, 1, MAX_SEED, f);
  fclose(f);
  return x;
}

/* A real traffic file of a few submits, written by the library's writer. */
static seed_t traffic_seed(void) {
  char path[160];
  snprintf(path, sizeof path, "%s/seed.fqt", g_dir);
  fq_err_t err;
  fq_err_clear(&err);
  fq_traffic_writer_t *w = fq_traffic_writer_new(path, 1700000000000LL, "fuzz seed", &err);
  if (!w) FAIL("traffic writer: %s", err.msg);
  fq_submit_args_t a[2] = {
      {.tenant = "acme", .key = "k1", .account = "a1", .vin = "5YJ3E1EA7KF000001",
       .command = "door_lock"},
      {.tenant = "acme", .key = "k2", .account = "a1", .site = 12345,
       .command = "backup", .ttl_ms = 60000, .coalesce = true}};
  fq_pval_t pct = {.name = "backup_reserve_percent", .name_len = 22, .type = FQ_PT_INT,
                   .v.i = 20};
  a[1].params = &pct;
  a[1].nparams = 1;
  fq_buf_t b;
  fq_buf_init(&b, 0);
  for (size_t i = 0; i < 2; i++) {
    fq_buf_reset(&b);
    if (fq_req_submit(&b, &a[i]) != 0) FAIL("cannot build seed submit %zu", i);
    if (fq_traffic_write(w, 1000 * (uint64_t)i, b.data, b.len, &err) != 0)
      FAIL("seed submit %zu refused by the writer: %s", i, err.msg);
  }
  fq_buf_free(&b);
  if (fq_traffic_writer_close(&w, &err) != 0) FAIL("traffic close: %s", err.msg);
  return from_file(path);
}

int main(int argc, char **argv) {
  unsigned long iters = argc > 1 ? strtoul(argv[1], NULL, 10) : 3000;
  uint32_t seed = 20261204u;
  setup();
  char pub[41], sec[41], pub2[41];
  zmq_curve_keypair(pub, sec);
  zmq_curve_keypair(pub2, sec);
  char clients[1024];
  snprintf(clients, sizeof clients,
           "[{\"name\": \"billing-svc\", \"key\": \"%s\", \"tenants\": [\"acme\", \"globex\"], "
           "\"roles\": [\"submit\", \"read\", \"cancel\", \"subscribe\"]},\n"
           " {\"name\": \"ops\", \"key\": \"%s\", \"tenants\": [\"*\"], \"roles\": [\"admin\"]}]\n",
           pub, pub2);
  seed_t seeds[] = {
      traffic_seed(),
      from_text(clients),
      from_text("{\"data\": \"/var/lib/fleetq\", \"shards\": 4, \"listen\": \"tcp://127.0.0.1:5555\","
                " \"map_size_mb\": 1024, \"batch_max\": 512, \"log_level\": \"debug\","
                " \"ipc_mode\": \"0660\", \"wake_max\": 2, \"device_rate\": 1.5}"),
      from_text("[]"),
      from_text("{}"),
  };
  size_t nseeds = sizeof seeds / sizeof seeds[0];
  for (size_t i = 0; i < nseeds; i++)
    if (!seeds[i].p || !seeds[i].n) FAIL("seed %zu could not be made", i);
  /* The seeds are valid inputs of their parsers: mutations start from
   * inputs that reach deep into them. */
  fq_err_t err;
  fq_err_clear(&err);
  write_input(seeds[0].p, seeds[0].n);
  fq_traffic_t *t = fq_traffic_open(g_path, &err);
  if (!t || fq_traffic_count(t) != 2) FAIL("traffic seed not read back: %s", err.msg);
  fq_traffic_close(&t);
  write_input(seeds[1].p, seeds[1].n);
  fq_clients_t *c = fq_clients_load(g_path, &err);
  if (!c || fq_clients_count(c) != 2) FAIL("clients seed not accepted: %s", err.msg);
  fq_clients_free(&c);
  write_input(seeds[2].p, seeds[2].n);
  static fq_config_t cfg;
  fq_config_defaults(&cfg);
  if (fq_config_load_file(&cfg, g_path, &err) != 0 || cfg.shards != 4 || cfg.ipc_mode != 0660)
    FAIL("config seed not accepted: %s", err.msg);
  printf("fuzz_files: %zu seeds, %lu mutations, seed %u, files in %s\n", nseeds, iters, seed,
         g_dir);
  for (size_t i = 0; i < nseeds; i++) LLVMFuzzerTestOneInput(seeds[i].p, seeds[i].n);
  static uint8_t buf[MAX_SEED + 64];
  for (unsigned long it = 0; it < iters; it++) {
    seed = seed * 1664525u + 1013904223u;
    const seed_t *s = &seeds[(seed >> 8) % nseeds];
    size_t n = s->n;
    memcpy(buf, s->p, n);
    int edits = 1 + (int)((seed >> 20) % 6);
    for (int e = 0; e < edits; e++) {
      seed = seed * 1664525u + 1013904223u;
      unsigned op = seed % 4, pos = n ? (seed >> 8) % (unsigned)n : 0;
      uint8_t byte = (uint8_t)(seed >> 24);
      if (op == 0 && n) buf[pos] = byte;                              /* replace */
      else if (op == 1 && n) buf[pos] ^= (uint8_t)(1u << (byte & 7)); /* flip */
      else if (op == 2 && n) n = pos;                                 /* truncate */
      else if (op == 3 && n < sizeof buf) {                           /* insert */
        memmove(buf + pos + 1, buf + pos, n - pos);
        buf[pos] = byte;
        n++;
      }
    }
    LLVMFuzzerTestOneInput(buf, n);
  }
  unlink(g_path);
  char p2[160];
  snprintf(p2, sizeof p2, "%s/seed.fqt", g_dir);
  unlink(p2);
  rmdir(g_dir);
  for (size_t i = 0; i < nseeds; i++) free(seeds[i].p);
  printf("fuzz_files: ok\n");
  return 0;
}
#endif
