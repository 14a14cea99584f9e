/*
 * bench_e2e: sustained end-to-end dispatch throughput of a real fleetqd
 * (submit -> `succeeded` event) through a real fleetsim with 10,000 cars on
 * loopback, durability on, next to the libcurl-multi ceiling against the
 * same simulator measured in the same run.
 *
 * One run:
 *   1. a fresh fleet key (0600 PEM), a fleetsim config with one account (a
 *      JWT-shaped access token carrying the scopes) owning N cars, fleetsim
 *      on an ephemeral port, fleetqd on a temporary data dir (fsync on, the
 *      default), the account added with an admin `account_add`;
 *   2. warm-up: one set_charge_limit per car, so every car has a session
 *      (its rate includes one handshake per car); then, for the signed
 *      ceiling, one handshake per car with a second key paired on every car;
 *   3. per round: DEALER producers submit set-point commands for cars
 *      chosen uniformly, each keeping at most `window` commands that have
 *      not reached a terminal state; a SUB socket counts terminal events
 *      and times them against the submit's send time; throughput is the
 *      terminal events of the steady window per second; fleetqd's and
 *      fleetsim's CPU (utime + stime) are sampled around the window, and
 *      the simulator's own counters (requests, executions) around the phase;
 *      then the ceilings: fq_http (the shard's own client code) on as many
 *      threads as fleetqd has shards, `inflight` requests in flight in all,
 *      for the same duration: GET /api/1/vehicles/{vin}, POST .../wake_up to
 *      awake cars (the cheapest POST the simulator answers 200 to), and POST
 *      .../signed_command with set_charge_limit signed by the bench itself
 *      (the very requests fleetqd sends, without fleetqd);
 *   4. latency at half the measured throughput, open loop;
 *   5. medians over the rounds, the ratios, latency percentiles, CPU per
 *      command and the CPU budget, written to perf/results/e2e.md.
 *
 * usage: bench_e2e [--fleetqd PATH] [--fleetsim PATH] [--cars N] [--producers N]
 *                  [--window N] [--duration S] [--rounds N] [--inflight N]
 *                  [--shards N] [--rate R] [--quick] [--profile] [--perf] [--keep]
 *                  [--out FILE]
 *
 * --profile prints, per fleetqd and fleetsim thread, the shares of each
 * measured window spent running, waiting for a CPU and asleep; --perf
 * runs one more, uncounted round under `perf record` (call graphs) and adds
 * where fleetqd's time goes to the results; --keep leaves the work dir
 * (daemon and simulator stderr, the data dir) for a look afterwards.  Environment variables reach
 * fleetqd unchanged (e.g. FQ_TRACE=1 makes the shards log batch sizes and
 * commit times).
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <lmdb.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/opensslv.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "fleetq/client.h"
#include "http.h"
#include "mpread.h"
#include "payload.h"
#include "util.h"
#include "vcp.h"

#define MAXP 32          /* producers */
#define MAXT 16          /* ceiling threads */
#define MAXR 15          /* rounds */
#define MAX_SHARDS 256
#define NTALLY 16

static int cars = 10000, producers = 4, window = 2048, rounds = 3, inflight = 1024, shards = 0;
static double duration = 15, ramp = 1.5, open_rate = 0;
static bool quick, profile, keep, use_perf;
static const char *fleetqd_path, *fleetsim_path, *out_path = "perf/results/e2e.md";

static char tmpdir[] = "/tmp/fq_e2e_XXXXXX";
static char endpoint[64], pub_ep[64], sim_base[96], token[1024], metrics_addr[64];
static volatile pid_t sim_pid = -1, fq_pid = -1;

/* ------------------------------------------------------------------ */
/* small helpers                                                        */

static int buf_write(void *data, const char *p, size_t n) {
  return fq_buf_append((fq_buf_t *)data, p, n) ? -1 : 0;
}

static void pk_str(msgpack_packer *pk, const char *s) {
  msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* 33 characters a VIN may hold (no I, O, Q). */
static const char vinchars[] = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789";

/* Car i's VIN: a fixed prefix and i in base 33 (unique for i < 33^9).  The
 * cars are listed in the simulator's config (rather than --gen-vehicles) so
 * that the benchmark chooses their VINs and accounts itself. */
static void vin_of(int i, char out[18]) {
  memcpy(out, "5YJ3E1EA", 8);
  unsigned v = (unsigned)i;
  for (int k = 16; k >= 8; k--) {
    out[k] = vinchars[v % 33];
    v /= 33;
  }
  out[17] = 0;
}

static uint32_t rnd(uint32_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static double median(const double *v, int n) {
  double s[MAXR];
  memcpy(s, v, (size_t)n * sizeof *s);
  for (int i = 1; i < n; i++)
    for (int k = i; k > 0 && s[k] < s[k - 1]; k--) {
      double t = s[k];
      s[k] = s[k - 1];
      s[k - 1] = t;
    }
  return s[n / 2];
}

static void sleep_until(int64_t t) {
  for (;;) {
    int64_t d = t - fq_mono_ns();
    if (d <= 0) return;
    struct timespec ts = {(time_t)(d / 1000000000), (long)(d % 1000000000)};
    nanosleep(&ts, NULL);
  }
}

/* utime + stime of a process (or of one of its threads with the
 * /proc/PID/task/TID/stat path) in microseconds; -1 when unreadable.
 * comm (up to 63 bytes) receives the name between the parentheses. */
static double stat_cpu_us(const char *path, char *comm, size_t comm_cap) {
  char b[1024];
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(b, 1, sizeof b - 1, f);
  fclose(f);
  b[n] = 0;
  char *l = strchr(b, '('), *r = strrchr(b, ')');
  if (!l || !r || r < l) return -1;
  if (comm) snprintf(comm, comm_cap, "%.*s", (int)(r - l - 1), l + 1);
  /* After ")": state is field 3; utime and stime are fields 14 and 15. */
  char *p = r + 2;
  unsigned long long ut = 0, st = 0;
  for (int field = 3; field <= 15 && *p; field++) {
    unsigned long long v = strtoull(p, NULL, 10);
    if (field == 14) ut = v;
    if (field == 15) st = v;
    p = strchr(p, ' ');
    if (!p) break;
    p++;
  }
  return (double)(ut + st) * 1e6 / (double)sysconf(_SC_CLK_TCK);
}

static double proc_cpu_us(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  return stat_cpu_us(path, NULL, 0);
}

static double self_cpu_us(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec * 1e6 + (double)ru.ru_utime.tv_usec +
         (double)ru.ru_stime.tv_sec * 1e6 + (double)ru.ru_stime.tv_usec;
}

/* Per-thread CPU of a process, summed by thread name. */
#define MAX_TNAMES 32
typedef struct tcpu {
  int n;
  char name[MAX_TNAMES][64];
  double us[MAX_TNAMES];
  double wait_us[MAX_TNAMES];  /* runnable but waiting for a CPU (schedstat) */
  int threads[MAX_TNAMES];
} tcpu_t;

/* Time a thread spent runnable but waiting for a CPU, in microseconds
 * (second field of /proc/.../schedstat); 0 when unavailable. */
static double sched_wait_us(const char *dir, const char *tid) {
  char path[160];
  snprintf(path, sizeof path, "%s/%.32s/schedstat", dir, tid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  unsigned long long run = 0, wait = 0;
  int n = fscanf(f, "%llu %llu", &run, &wait);
  fclose(f);
  return n == 2 ? (double)wait / 1e3 : 0;
}

static void thread_cpu(pid_t pid, tcpu_t *t) {
  memset(t, 0, sizeof *t);
  char dir[64];
  snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
  DIR *ls = opendir(dir);
  if (!ls) return;
  struct dirent *de;
  while ((de = readdir(ls))) {
    const char *tid = de->d_name;
    if (tid[0] == '.') continue;
    char path[160], comm[64];
    snprintf(path, sizeof path, "%s/%.32s/stat", dir, tid);
    double us = stat_cpu_us(path, comm, sizeof comm);
    if (us < 0) continue;
    int k = 0;
    while (k < t->n && strcmp(t->name[k], comm) != 0) k++;
    if (k == t->n) {
      if (t->n == MAX_TNAMES) continue;
      snprintf(t->name[t->n++], sizeof t->name[0], "%s", comm);
    }
    t->us[k] += us;
    t->wait_us[k] += sched_wait_us(dir, tid);
    t->threads[k]++;
  }
  closedir(ls);
}

/* after - before, by name, into d (names of `after`). */
static void tcpu_delta(const tcpu_t *before, const tcpu_t *after, tcpu_t *d) {
  *d = *after;
  for (int i = 0; i < d->n; i++)
    for (int k = 0; k < before->n; k++)
      if (!strcmp(before->name[k], d->name[i])) {
        d->us[i] -= before->us[k];
        d->wait_us[i] -= before->wait_us[k];
      }
}

/* ------------------------------------------------------------------ */
/* the values of events and acks the bench looks at, read with the base  */
/* layer's bounded reader (it allocates nothing: four or so events per   */
/* command must not make the bench the bottleneck)                       */

enum { MT_BAD = 0, MT_STR, MT_INT, MT_NIL, MT_BOOL, MT_OTHER };

typedef struct mpv {
  int type;
  const char *s;
  size_t n;
  int64_t i;
  bool b;
} mpv_t;

/* Read one value; containers (at most 8 levels), bin, ext and floats are
 * skipped (MT_OTHER). */
static bool mp_read(fq__mp_rd_t *r, mpv_t *v) {
  fq__mp_rd_t at = *r;
  fq__mp_obj_t o;
  memset(v, 0, sizeof *v);
  if (fq__mp_next(r, &o, NULL)) return false;
  switch (o.kind) {
  case FQ__MP_STR:
    v->type = MT_STR;
    v->s = (const char *)o.p;
    v->n = o.len;
    return true;
  case FQ__MP_UINT:
    v->type = MT_INT;
    v->i = (int64_t)o.v.u;
    return true;
  case FQ__MP_NINT:
    v->type = MT_INT;
    v->i = o.v.i;
    return true;
  case FQ__MP_NIL: v->type = MT_NIL; return true;
  case FQ__MP_BOOL:
    v->type = MT_BOOL;
    v->b = o.v.b;
    return true;
  case FQ__MP_ARRAY:
  case FQ__MP_MAP:
    *r = at;
    v->type = MT_OTHER;
    return fq__mp_skip(r, 1, 8, NULL) == 0;
  default: v->type = MT_OTHER; return true;
  }
}

/* Open a top-level map; returns its entry count or -1. */
static long mp_map(fq__mp_rd_t *r) {
  fq__mp_obj_t o;
  if (fq__mp_next(r, &o, NULL) || o.kind != FQ__MP_MAP) return -1;
  return (long)o.v.count;
}

static bool key_is(const mpv_t *k, const char *s) {
  return k->type == MT_STR && k->n == strlen(s) && !memcmp(k->s, s, k->n);
}

/* ------------------------------------------------------------------ */
/* tallies of failures by "state/error"                                 */

typedef struct tally {
  int n;
  char what[NTALLY][96];
  long count[NTALLY];
  char example[NTALLY][200];
} tally_t;

static void tally_add(tally_t *t, const char *what, const char *example) {
  int k = 0;
  while (k < t->n && strcmp(t->what[k], what) != 0) k++;
  if (k == t->n) {
    if (t->n == NTALLY) k = NTALLY - 1; /* the last slot collects the rest */
    else {
      t->n++;
      snprintf(t->what[k], sizeof t->what[k], "%s", what);
      snprintf(t->example[k], sizeof t->example[k], "%s", example);
    }
  }
  t->count[k]++;
}

static void tally_merge(tally_t *into, const tally_t *from) {
  for (int i = 0; i < from->n; i++)
    for (long c = 0; c < from->count[i]; c++) tally_add(into, from->what[i], from->example[i]);
}

static long tally_total(const tally_t *t) {
  long s = 0;
  for (int i = 0; i < t->n; i++) s += t->count[i];
  return s;
}

/* ------------------------------------------------------------------ */
/* the load: producers and the subscriber                               */

enum { MODE_WARM = 0, MODE_MEASURE };

typedef struct load load_t;

typedef struct prod {
  load_t *L;
  int id;
  long sent, acked, rejected;
  _Atomic long sent_pub;   /* `sent` as the main thread may read it meanwhile */
  long slice;            /* warm-up: cars this producer sends */
  _Atomic int64_t *sent_at;
  long cap;
  tally_t rejects;
} prod_t;

struct load {
  void *ctx;
  int mode;
  unsigned run;
  int nprod;
  long per_window;
  double rate;                 /* open loop: commands/s in all; 0 = closed loop */
  int64_t t0;
  prod_t prod[MAXP];
  _Atomic long done[MAXP];     /* terminal events (or rejections) per producer */
  atomic_int stop;             /* producers stop sending */
  atomic_int sub_stop;
  _Atomic int64_t win0, win1;  /* steady window (monotonic ns); set after the subscriber starts */
  /* subscriber's results (read after it is joined) */
  long term_in_win, succ_in_win, term_total, succ_total, events, bad_events, seq_gaps, foreign;
  int64_t *lat;
  long nlat, lat_cap;
  int64_t last_term_ns;
  tally_t fails;
  uint64_t last_seq[MAX_SHARDS];
  bool seen_shard[MAX_SHARDS];
};

/* A submit: set_charge_limit or set_charging_amps with a valid value, a
 * key that names the run, producer and index (the events carry it back). */
static void make_submit(fq_buf_t *b, unsigned run, int p, long i, int car, uint32_t *rng) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, b, buf_write);
  char vin[18], key[64];
  vin_of(car, vin);
  snprintf(key, sizeof key, "e%u-%d-%ld", run, p, i);
  bool amps = run > 0 && (rnd(rng) & 1);
  msgpack_pack_map(&pk, 8);
  pk_str(&pk, "op"); pk_str(&pk, "submit");
  pk_str(&pk, "tenant"); pk_str(&pk, "bench");
  pk_str(&pk, "key"); pk_str(&pk, key);
  pk_str(&pk, "account"); pk_str(&pk, "bench");
  pk_str(&pk, "vin"); pk_str(&pk, vin);
  pk_str(&pk, "command"); pk_str(&pk, amps ? "set_charging_amps" : "set_charge_limit");
  pk_str(&pk, "params");
  msgpack_pack_map(&pk, 1);
  if (amps) {
    pk_str(&pk, "charging_amps");
    msgpack_pack_int(&pk, 5 + (int)(rnd(rng) % 28));
  } else {
    pk_str(&pk, "percent");
    msgpack_pack_int(&pk, 50 + (int)(rnd(rng) % 51));
  }
  pk_str(&pk, "req");
  msgpack_pack_int64(&pk, i);
}

static void *producer_main(void *arg) {
  prod_t *P = arg;
  load_t *L = P->L;
  void *s = zmq_socket(L->ctx, ZMQ_DEALER);
  int hwm = 0, linger = 0;
  zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
  zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  zmq_connect(s, endpoint);
  fq_buf_t b;
  fq_buf_init(&b, 0);
  uint32_t rng = 0x9e3779b9u ^ (L->run * 7919u + (unsigned)P->id * 104729u + 1u);
  long limit = L->mode == MODE_WARM ? P->slice : P->cap;
  for (;;) {
    bool stopping = atomic_load(&L->stop);
    long done = atomic_load(&L->done[P->id]);
    /* Open loop (rate > 0): send on schedule, time from the intended send
     * time (a stalled daemon cannot hide latency by slowing us down); the
     * window is then only a safety cap. */
    long win = L->rate > 0 ? 4 * L->per_window : L->per_window;
    while (!stopping && P->sent < limit && P->sent - done < win) {
      int64_t at = fq_mono_ns();
      if (L->rate > 0) {
        int64_t due = L->t0 + (int64_t)((double)P->sent * 1e9 * L->nprod / L->rate);
        if (due > at) break;
        at = due;
      }
      int car = L->mode == MODE_WARM ? (int)(P->sent * L->nprod + P->id)
                                     : (int)(rnd(&rng) % (uint32_t)cars);
      fq_buf_reset(&b);
      make_submit(&b, L->run, P->id, P->sent, car, &rng);
      atomic_store_explicit(&P->sent_at[P->sent], at, memory_order_release);
      if (zmq_send(s, b.data, b.len, 0) < 0) break;
      P->sent++;
      atomic_store_explicit(&P->sent_pub, P->sent, memory_order_relaxed);
    }
    if ((stopping || P->sent >= limit) && P->acked + P->rejected >= P->sent) break;
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 1) <= 0) continue;
    zmq_msg_t m;
    zmq_msg_init(&m);
    while (zmq_msg_recv(&m, s, ZMQ_DONTWAIT) >= 0) {
      fq__mp_rd_t r;
      fq__mp_rd_init(&r, zmq_msg_data(&m), zmq_msg_size(&m));
      long n = mp_map(&r), req = -1;
      bool ok = false;
      char err[96] = "?", msg[200] = "";
      for (long k = 0; k < n; k++) {
        mpv_t kk, vv;
        if (!mp_read(&r, &kk) || !mp_read(&r, &vv)) break;
        if (key_is(&kk, "ok") && vv.type == MT_BOOL) ok = vv.b;
        else if (key_is(&kk, "req") && vv.type == MT_INT) req = (long)vv.i;
        else if (key_is(&kk, "error") && vv.type == MT_STR)
          snprintf(err, sizeof err, "rejected/%.*s", (int)vv.n, vv.s);
        else if (key_is(&kk, "message") && vv.type == MT_STR)
          snprintf(msg, sizeof msg, "%.*s", (int)vv.n, vv.s);
      }
      if (req < 0 || req >= P->sent) continue;
      if (ok) {
        P->acked++;
      } else {
        /* No events follow a refused submit: free its window slot. */
        P->rejected++;
        tally_add(&P->rejects, err, msg);
        atomic_fetch_add(&L->done[P->id], 1);
      }
    }
    zmq_msg_close(&m);
  }
  fq_buf_free(&b);
  zmq_close(s);
  return NULL;
}

static bool terminal(const mpv_t *st) {
  static const char *const t[] = {"succeeded", "failed", "unknown", "expired", "cancelled",
                                  "superseded"};
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    if (key_is(st, t[i])) return true;
  return false;
}

static void on_event(load_t *L, const uint8_t *p, size_t n) {
  fq__mp_rd_t r;
  fq__mp_rd_init(&r, p, n);
  long cnt = mp_map(&r);
  mpv_t key = {0}, state = {0}, error = {0}, reason = {0}, shard = {0}, seq = {0};
  for (long k = 0; k < cnt; k++) {
    mpv_t kk, vv;
    if (!mp_read(&r, &kk) || !mp_read(&r, &vv)) {
      L->bad_events++;
      return;
    }
    if (key_is(&kk, "key")) key = vv;
    else if (key_is(&kk, "state")) state = vv;
    else if (key_is(&kk, "error")) error = vv;
    else if (key_is(&kk, "reason")) reason = vv;
    else if (key_is(&kk, "shard")) shard = vv;
    else if (key_is(&kk, "seq")) seq = vv;
  }
  if (key.type != MT_STR || state.type != MT_STR) {
    L->bad_events++;
    return;
  }
  L->events++;
  if (shard.type == MT_INT && seq.type == MT_INT && shard.i >= 0 && shard.i < MAX_SHARDS) {
    uint64_t sq = (uint64_t)seq.i;
    if (L->seen_shard[shard.i] && sq > L->last_seq[shard.i] + 1)
      L->seq_gaps += (long)(sq - L->last_seq[shard.i] - 1);
    L->seen_shard[shard.i] = true;
    L->last_seq[shard.i] = sq;
  }
  if (!terminal(&state)) return;
  char kb[64];
  unsigned run;
  int pi;
  long idx;
  snprintf(kb, sizeof kb, "%.*s", (int)(key.n < 63 ? key.n : 63), key.s);
  if (sscanf(kb, "e%u-%d-%ld", &run, &pi, &idx) != 3 || run != L->run || pi < 0 ||
      pi >= L->nprod || idx < 0 || idx >= L->prod[pi].cap) {
    L->foreign++;
    return;
  }
  int64_t now = fq_mono_ns();
  int64_t sent = atomic_load_explicit(&L->prod[pi].sent_at[idx], memory_order_acquire);
  bool in_win = now >= L->win0 && now < L->win1;
  bool ok = key_is(&state, "succeeded");
  L->term_total++;
  if (ok) L->succ_total++;
  L->last_term_ns = now;
  if (in_win) {
    L->term_in_win++;
    if (ok) L->succ_in_win++;
  }
  if (ok && in_win && sent > 0 && L->nlat < L->lat_cap) L->lat[L->nlat++] = now - sent;
  if (!ok) {
    char what[96], ex[200];
    snprintf(what, sizeof what, "%.*s/%.*s", (int)state.n, state.s,
             error.type == MT_STR ? (int)error.n : 1, error.type == MT_STR ? error.s : "-");
    snprintf(ex, sizeof ex, "%.*s", reason.type == MT_STR ? (int)reason.n : 0,
             reason.type == MT_STR ? reason.s : "");
    tally_add(&L->fails, what, ex);
  }
  atomic_fetch_add(&L->done[pi], 1);
}

static void *sub_main(void *arg) {
  load_t *L = arg;
  void *s = zmq_socket(L->ctx, ZMQ_SUB);
  int hwm = 0, linger = 0;
  zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(s, ZMQ_SUBSCRIBE, "bench/", 6);
  zmq_connect(s, pub_ep);
  zmq_msg_t m;
  zmq_msg_init(&m);
  while (!atomic_load(&L->sub_stop)) {
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 20) <= 0) continue;
    while (zmq_msg_recv(&m, s, ZMQ_DONTWAIT) >= 0) {
      /* Topic frame, then the event map. */
      if (!zmq_msg_more(&m)) continue;
      if (zmq_msg_recv(&m, s, 0) < 0) break;
      on_event(L, zmq_msg_data(&m), zmq_msg_size(&m));
      while (zmq_msg_more(&m) && zmq_msg_recv(&m, s, 0) >= 0) {
      }
    }
  }
  zmq_msg_close(&m);
  zmq_close(s);
  return NULL;
}

/* ------------------------------------------------------------------ */
/* the ceiling: fq_http against the simulator                           */

/* What the ceiling sends. */
enum { C_GET = 0, C_WAKE, C_SIGNED, C_KINDS };

/* The signed-command ceiling uses its own client key, paired on every car
 * next to the fleet key (the car keeps counters per key, so these sessions
 * never disturb fleetqd's), and one INFOTAINMENT session per car made by a
 * handshake before the first round. */
static fq_vcp_key_t *ckey;
static char ckey_hex[131];
static fq_vcp_session_t **csess;

typedef struct ceil_job {
  int kind;
  int index, nthreads;   /* C_SIGNED: this thread uses the cars c % nthreads == index */
  fq_buf_t payload, rm, body;
  char *b64;
  long inflight;
  int64_t win0, t_end;
  long ok, failed, ok_in_win, busy;
  uint32_t rng;
  fq_http_t *h;
  char first_err[240];
} ceil_job_t;

static void ceil_done(void *ud, const fq_http_resp_t *r);

static void ceil_start(ceil_job_t *j) {
  char vin[18], url[256];
  vin_of((int)(rnd(&j->rng) % (uint32_t)cars), vin);
  uint64_t id;
  fq_err_t err;
  int rc;
  if (j->kind == C_SIGNED) {
    /* What a shard sends for set_charge_limit, signed here: one of this
     * thread's cars (sessions are owned by one thread at a time). */
    int per = (cars - j->index + j->nthreads - 1) / j->nthreads;
    int car = j->index + j->nthreads * (int)(rnd(&j->rng) % (uint32_t)per);
    vin_of(car, vin);
    fq_pval_t pv = {.name = "percent", .name_len = 7, .type = FQ_PT_INT};
    pv.v.i = 50 + (int)(rnd(&j->rng) % 51);
    fq_buf_reset(&j->payload);
    fq_buf_reset(&j->rm);
    fq_buf_reset(&j->body);
    fq_vcp_request_t vreq;
    fq_vcp_sign_opts_t so = {.now_ms = fq_now_ms()};
    rc = fq_payload_build_named("set_charge_limit", &pv, 1, NULL, &j->payload, &err);
    if (!rc)
      rc = fq_vcp_sign(csess[car], j->payload.data, j->payload.len, &so, &vreq, &j->rm, &err);
    if (!rc) {
      fq_base64_encode(j->rm.data, j->rm.len, j->b64);
      fq_buf_printf(&j->body, "{\"routable_message\":\"%s\"}", j->b64);
      snprintf(url, sizeof url, "%s/api/1/vehicles/%s/signed_command", sim_base, vin);
      rc = fq_http_post_json(j->h, url, token, j->body.data, j->body.len, ceil_done, j, &id,
                             &err);
    }
  } else if (j->kind == C_WAKE) {
    snprintf(url, sizeof url, "%s/api/1/vehicles/%s/wake_up", sim_base, vin);
    rc = fq_http_post_json(j->h, url, token, "{}", 2, ceil_done, j, &id, &err);
  } else {
    snprintf(url, sizeof url, "%s/api/1/vehicles/%s", sim_base, vin);
    rc = fq_http_get(j->h, url, token, ceil_done, j, &id, &err);
  }
  if (rc) {
    j->busy++;
    if (!j->first_err[0]) snprintf(j->first_err, sizeof j->first_err, "submit: %.200s", err.msg);
  }
}

static void ceil_done(void *ud, const fq_http_resp_t *r) {
  ceil_job_t *j = ud;
  int64_t now = fq_mono_ns();
  if (r->outcome == FQ_HTTP_COMPLETE && r->status == 200) {
    j->ok++;
    if (now >= j->win0 && now < j->t_end) j->ok_in_win++;
  } else {
    if (j->failed++ == 0)
      snprintf(j->first_err, sizeof j->first_err, "%s, HTTP %ld, %.100s: %.80s",
               fq_http_outcome_name(r->outcome), r->status, r->err.msg,
               r->body ? (const char *)r->body : "");
  }
  if (now < j->t_end) ceil_start(j);
}

static void *ceil_main(void *arg) {
  ceil_job_t *j = arg;
  fq_err_t err;
  /* fleetqd's default --http-timeout-ms: a request the server leaves
   * unanswered costs both sides the same. */
  fq_http_opts_t o = {.max_inflight = (unsigned)j->inflight, .total_timeout_ms = 10000};
  j->h = fq_http_new(&o, &err);
  if (!j->h) {
    snprintf(j->first_err, sizeof j->first_err, "fq_http_new: %.200s", err.msg);
    return NULL;
  }
  fq_buf_init(&j->payload, FQ_VCP_MAX_PAYLOAD);
  fq_buf_init(&j->rm, FQ_VCP_MAX_MSG);
  fq_buf_init(&j->body, 0);
  j->b64 = malloc(4 * (FQ_VCP_MAX_MSG / 3 + 1) + 1);
  if (!j->b64) {
    fq_http_destroy(&j->h);
    return NULL;
  }
  for (long i = 0; i < j->inflight; i++) ceil_start(j);
  while (fq_http_inflight(j->h) > 0 && fq_mono_ns() < j->t_end + 30LL * 1000000000) {
    if (fq_http_run_once(j->h, 50, &err) < 0) {
      snprintf(j->first_err, sizeof j->first_err, "run: %.200s", err.msg);
      break;
    }
  }
  fq_http_destroy(&j->h);
  fq_buf_free(&j->payload);
  fq_buf_free(&j->rm);
  fq_buf_free(&j->body);
  free(j->b64);
  return NULL;
}

typedef struct ceil_res {
  double rate, sim_cpu_per_req, self_cpu_per_req;
  long ok, failed;
  long sim_exec, sim_fault;    /* the simulator's counts over the phase (SIGNED) */
  char first_err[240];
} ceil_res_t;

typedef struct sim_stats {
  long requests, executions, handshakes, signed_ok, signed_fault;
} sim_stats_t;
static int sim_stats(sim_stats_t *out);

static ceil_res_t run_ceiling(int kind, int nthreads, double secs) {
  ceil_job_t jobs[MAXT];
  pthread_t th[MAXT];
  sim_stats_t st0, st1;
  int st_rc = sim_stats(&st0);
  int64_t t0 = fq_mono_ns();
  int64_t win0 = t0 + (int64_t)(ramp * 1e9), t_end = win0 + (int64_t)(secs * 1e9);
  for (int i = 0; i < nthreads; i++) {
    jobs[i] = (ceil_job_t){.kind = kind, .index = i, .nthreads = nthreads,
                           .inflight = inflight / nthreads, .win0 = win0, .t_end = t_end,
                           .rng = 0x2545f491u * (uint32_t)(i + 1) + 2u * (uint32_t)kind + 1};
    if (i < inflight % nthreads) jobs[i].inflight++;
    pthread_create(&th[i], NULL, ceil_main, &jobs[i]);
  }
  sleep_until(win0);
  double s0 = proc_cpu_us(sim_pid), me0 = self_cpu_us();
  sleep_until(t_end);
  double s1 = proc_cpu_us(sim_pid), me1 = self_cpu_us();
  ceil_res_t r = {0};
  long in_win = 0;
  for (int i = 0; i < nthreads; i++) {
    pthread_join(th[i], NULL);
    r.ok += jobs[i].ok;
    r.failed += jobs[i].failed + jobs[i].busy;
    in_win += jobs[i].ok_in_win;
    if (!r.first_err[0] && jobs[i].first_err[0])
      snprintf(r.first_err, sizeof r.first_err, "%s", jobs[i].first_err);
  }
  if (st_rc == 0 && sim_stats(&st1) == 0) {
    r.sim_exec = st1.executions - st0.executions;
    r.sim_fault = st1.signed_fault - st0.signed_fault;
  }
  r.rate = (double)in_win / secs;
  r.sim_cpu_per_req = in_win ? (s1 - s0) / (double)in_win : 0;
  r.self_cpu_per_req = in_win ? (me1 - me0) / (double)in_win : 0;
  return r;
}

/* Handshakes of the signed-command ceiling: one INFOTAINMENT session per
 * car for ckey, `inflight` at a time on one fq_http in this thread. */
typedef struct hs_state {
  fq_http_t *h;
  int next;
  long ok, failed;
  char first_err[240];
  fq_vcp_request_t *reqs;
  fq_buf_t rm, body;
  char *b64;
  uint8_t *raw;
} hs_state_t;

typedef struct hs_slot {
  hs_state_t *st;
  int car;
} hs_slot_t;

static hs_slot_t *hs_slots;

static void hs_done(void *ud, const fq_http_resp_t *r);

static void hs_start(hs_state_t *st) {
  if (st->next >= cars) return;
  int car = st->next++;
  char vin[18], url[256];
  vin_of(car, vin);
  fq_err_t err;
  fq_buf_reset(&st->rm);
  fq_buf_reset(&st->body);
  int rc = fq_vcp_handshake_request(ckey, FQ_VCP_DOMAIN_INFOTAINMENT, NULL, NULL, fq_now_ms(),
                                    &st->reqs[car], &st->rm, &err);
  uint64_t id;
  if (!rc) {
    fq_base64_encode(st->rm.data, st->rm.len, st->b64);
    fq_buf_printf(&st->body, "{\"routable_message\":\"%s\"}", st->b64);
    snprintf(url, sizeof url, "%s/api/1/vehicles/%s/signed_command", sim_base, vin);
    rc = fq_http_post_json(st->h, url, token, st->body.data, st->body.len, hs_done,
                           &hs_slots[car], &id, &err);
  }
  if (rc && st->failed++ == 0)
    snprintf(st->first_err, sizeof st->first_err, "handshake %s: %.200s", vin, err.msg);
}

static void hs_done(void *ud, const fq_http_resp_t *r) {
  hs_slot_t *sl = ud;
  hs_state_t *st = sl->st;
  char vin[18];
  vin_of(sl->car, vin);
  fq_err_t err = {0};
  int rc = -1;
  if (r->outcome == FQ_HTTP_COMPLETE && r->status == 200) {
    json_error_t je;
    json_t *j = json_loadb((const char *)r->body, r->body_len, 0, &je);
    const char *b = j ? json_string_value(json_object_get(j, "response")) : NULL;
    long n = b ? fq_base64_decode(b, strlen(b), st->raw, FQ_VCP_MAX_MSG) : -1;
    if (n > 0) {
      fq_vcp_outcome_t o;
      rc = fq_vcp_handshake_finish(ckey, vin, &st->reqs[sl->car], st->raw, (size_t)n,
                                   fq_now_ms(), &csess[sl->car], &o, &err);
    }
    json_decref(j);
  }
  if (rc == 0) {
    st->ok++;
  } else if (st->failed++ == 0) {
    snprintf(st->first_err, sizeof st->first_err, "handshake %s: HTTP %ld %.100s %.80s", vin,
             r->status, err.msg, r->body ? (const char *)r->body : "");
  }
  hs_start(st);
}

/* 0 when every car has a session for ckey. */
static int ceiling_handshakes(double *secs) {
  hs_state_t st = {0};
  fq_err_t err;
  fq_http_opts_t o = {.max_inflight = (unsigned)inflight, .total_timeout_ms = 10000};
  int64_t t0 = fq_mono_ns();
  csess = calloc((size_t)cars, sizeof *csess);
  hs_slots = calloc((size_t)cars, sizeof *hs_slots);
  st.reqs = calloc((size_t)cars, sizeof *st.reqs);
  st.b64 = malloc(4 * (FQ_VCP_MAX_MSG / 3 + 1) + 1);
  st.raw = malloc(FQ_VCP_MAX_MSG);
  st.h = fq_http_new(&o, &err);
  fq_buf_init(&st.rm, FQ_VCP_MAX_MSG);
  fq_buf_init(&st.body, 0);
  if (csess && hs_slots && st.reqs && st.b64 && st.raw && st.h) {
    for (int i = 0; i < cars; i++) hs_slots[i] = (hs_slot_t){&st, i};
    for (int i = 0; i < inflight; i++) hs_start(&st);
    while (fq_http_inflight(st.h) > 0)
      if (fq_http_run_once(st.h, 100, &err) < 0) break;
  }
  *secs = (double)(fq_mono_ns() - t0) / 1e9;
  if (st.ok != cars)
    fprintf(stderr, "bench_e2e: signed ceiling: %ld of %d handshakes done (%s); skipped\n",
            st.ok, cars, st.first_err);
  fq_http_destroy(&st.h);
  fq_buf_free(&st.rm);
  fq_buf_free(&st.body);
  free(st.reqs);
  free(st.b64);
  free(st.raw);
  free(hs_slots);
  hs_slots = NULL;
  return st.ok == cars ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* the simulator's own counters (GET /sim/stats)                        */


typedef struct stats_call {
  bool done;
  int ok;
  sim_stats_t *out;
} stats_call_t;

static void stats_done(void *ud, const fq_http_resp_t *r) {
  stats_call_t *c = ud;
  c->done = true;
  if (r->outcome != FQ_HTTP_COMPLETE || r->status != 200) return;
  json_error_t je;
  json_t *j = json_loadb((const char *)r->body, r->body_len, 0, &je);
  if (!j) return;
  c->out->requests = (long)json_integer_value(json_object_get(j, "requests"));
  c->out->executions = (long)json_integer_value(json_object_get(j, "executions"));
  c->out->handshakes = (long)json_integer_value(json_object_get(j, "handshakes"));
  c->out->signed_ok = (long)json_integer_value(json_object_get(j, "signed_ok"));
  c->out->signed_fault = (long)json_integer_value(json_object_get(j, "signed_fault"));
  c->ok = 1;
  json_decref(j);
}

/* Read the simulator's counters; 0 or -1. */
static int sim_stats(sim_stats_t *out) {
  memset(out, 0, sizeof *out);
  fq_err_t err;
  fq_http_opts_t o = {.max_inflight = 1};
  fq_http_t *h = fq_http_new(&o, &err);
  if (!h) return -1;
  char url[160];
  snprintf(url, sizeof url, "%s/sim/stats", sim_base);
  stats_call_t c = {.out = out};
  uint64_t id;
  int64_t deadline = fq_mono_ns() + 10LL * 1000000000;
  if (fq_http_get(h, url, NULL, stats_done, &c, &id, &err) == 0)
    while (!c.done && fq_mono_ns() < deadline)
      if (fq_http_run_once(h, 100, &err) < 0) break;
  fq_http_destroy(&h);
  return c.ok ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* one load phase                                                       */

typedef struct e2e_res {
  double rate, elapsed;               /* terminal events/s in the window */
  double p50, p90, p99, p999, max;    /* ms, succeeded commands */
  double fq_cpu_per_cmd, sim_cpu_per_cmd, self_cpu_per_cmd, fq_cores, sim_cores;
  long sent, succeeded_win, terminal_win, terminal_total, succeeded_total, rejected, unfinished,
      events,
      seq_gaps, bad_events, foreign;
  sim_stats_t sim;                    /* the simulator's counters over the phase */
  tally_t fails, rejects;
  tcpu_t threads;                     /* fleetqd per-thread CPU in the window */
  tcpu_t sim_threads;
} e2e_res_t;

static void percentiles(int64_t *v, long n, e2e_res_t *r) {
  if (n <= 0) return;
  qsort(v, (size_t)n, sizeof *v, cmp_i64);
  r->p50 = (double)v[n / 2] / 1e6;
  r->p90 = (double)v[(long)((double)n * 0.90)] / 1e6;
  r->p99 = (double)v[(long)((double)n * 0.99)] / 1e6;
  r->p999 = (double)v[(long)((double)n * 0.999)] / 1e6;
  r->max = (double)v[n - 1] / 1e6;
}

/* fleetqd's histograms of where a dispatched command waits (metrics.c):
 * scraped before and after a phase, the difference gives the phase's own
 * distribution. */
#define NWAIT 3
static const char *const wait_hist[NWAIT] = {"fleetq_dispatch_send_wait_seconds",
                                             "fleetq_dispatch_request_seconds",
                                             "fleetq_dispatch_settle_wait_seconds"};
static const char *const wait_label[NWAIT] = {"accepted -> first request out",
                                              "Fleet API round trip",
                                              "answer -> terminal state committed"};
#define WAIT_NB 17
typedef struct waits {
  bool ok;
  double le[NWAIT][WAIT_NB];   /* bucket bounds (s); the last is +Inf */
  double cum[NWAIT][WAIT_NB];  /* cumulative counts */
  int nb[NWAIT];
} waits_t;

static size_t curl_sink(char *p, size_t size, size_t n, void *ud) {
  return fq_buf_append((fq_buf_t *)ud, p, size * n) ? 0 : size * n;
}

static void scrape_waits(waits_t *w) {
  memset(w, 0, sizeof *w);
  CURL *c = curl_easy_init();
  if (!c) return;
  char url[128];
  snprintf(url, sizeof url, "http://%s/metrics", metrics_addr);
  fq_buf_t b;
  fq_buf_init(&b, 4u << 20);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, curl_sink);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
  if (curl_easy_perform(c) == CURLE_OK && fq_buf_append(&b, "", 1) == 0) {
    for (int h = 0; h < NWAIT; h++) {
      char pat[96];
      int pl = snprintf(pat, sizeof pat, "%s_bucket{le=\"", wait_hist[h]);
      for (const char *p = (const char *)b.data; (p = strstr(p, pat)) && w->nb[h] < WAIT_NB;) {
        p += pl;
        double le = strncmp(p, "+Inf", 4) == 0 ? 1e300 : strtod(p, NULL);
        const char *q = strstr(p, "} ");
        if (!q) break;
        w->le[h][w->nb[h]] = le;
        w->cum[h][w->nb[h]++] = strtod(q + 2, NULL);
        p = q;
      }
    }
    w->ok = w->nb[0] > 0;
  }
  fq_buf_free(&b);
  curl_easy_cleanup(c);
}

/* The bucket bound (ms) under which fraction q of the phase's
 * observations fell; -1: none, 1e300: above the last bound. */
static double wait_q(const waits_t *a, const waits_t *b, int h, double q, double *n) {
  *n = 0;
  if (!a->ok || !b->ok || a->nb[h] != b->nb[h] || !b->nb[h]) return -1;
  int last = b->nb[h] - 1;
  *n = b->cum[h][last] - a->cum[h][last];
  if (*n <= 0) return -1;
  for (int i = 0; i <= last; i++)
    if (b->cum[h][i] - a->cum[h][i] >= q * *n) return b->le[h][i] >= 1e300 ? 1e300 : b->le[h][i] * 1e3;
  return 1e300;
}

/* "accepted -> first request out p50 <= 5 ms, p99 <= 50 ms; ..." */
static void print_waits(FILE *f, const waits_t *a, const waits_t *b) {
  if (!a->ok || !b->ok) {
    fprintf(f, "no metrics scraped");
    return;
  }
  for (int h = 0; h < NWAIT; h++) {
    double n, p50 = wait_q(a, b, h, 0.5, &n), p99 = wait_q(a, b, h, 0.99, &n);
    if (p50 < 0) {
      fprintf(f, "%s%s: none", h ? "; " : "", wait_label[h]);
      continue;
    }
    fprintf(f, "%s%s p50 <= %g ms, p99 %s %g ms", h ? "; " : "", wait_label[h], p50,
            p99 >= 1e300 ? ">" : "<=", p99 >= 1e300 ? b->le[h][b->nb[h] - 2] * 1e3 : p99);
  }
}

/* --perf: `perf record` on fleetqd during one extra, unreported round
 * (sampling with call graphs costs CPU, so it must not bias the measured
 * rounds), then the functions with the most inclusive time. */
static pid_t spawn(char *const argv[], int out_fd, const char *err_path);
static bool perf_wanted;
static pid_t perf_pid = -1;
static char perf_data[300];

static void perf_start(double secs) {
  char pid[16], dur[16], errp[300];
  snprintf(pid, sizeof pid, "%d", (int)fq_pid);
  snprintf(dur, sizeof dur, "%.0f", secs < 5 ? secs : 5);
  snprintf(perf_data, sizeof perf_data, "%s/perf.data", tmpdir);
  snprintf(errp, sizeof errp, "%s/perf.err", tmpdir);
  char *argv[] = {"/usr/bin/perf", "record", "-F", "499", "--call-graph", "dwarf,8192", "-p", pid,
                  "-o", perf_data, "--", "sleep", dur, NULL};
  perf_pid = spawn(argv, -1, errp);
}

/* Append perf's report (inclusive time per user-space function, and the
 * split by thread and library) to out; also printed. */
static void perf_report(fq_buf_t *out) {
  if (perf_pid <= 0) return;
  int st;
  waitpid(perf_pid, &st, 0);
  perf_pid = -1;
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    fq_buf_printf(out, "perf record failed (see %s/perf.err)\n", tmpdir);
    return;
  }
  static const char *const cmds[] = {
      "--no-children --sort comm,dso --stdio -g none --percent-limit 1.5 "
      "2>/dev/null | grep -v '^#' | grep -v '^$' | head -20",
      "--children --sort sym --stdio -g none --percent-limit 1.5 "
      "2>/dev/null | grep -v '^#' | grep -v '^$' | grep -v '\\[k\\]' | grep -v '0x0000\\|0xffff' "
      "| grep -v 'start_thread\\|clone3\\|_start$\\|libc_start' | head -45"};
  static const char *const titles[] = {"self time by thread and library",
                                       "inclusive time by function (user space)"};
  for (size_t i = 0; i < 2; i++) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "perf report -i '%s' %s", perf_data, cmds[i]);
    FILE *f = popen(cmd, "r");
    if (!f) continue;
    fq_buf_printf(out, "%s:\n\n```\n", titles[i]);
    char line[512];
    while (fgets(line, sizeof line, f)) fq_buf_append_str(out, line);
    fq_buf_printf(out, "```\n\n");
    pclose(f);
  }
}

static e2e_res_t run_load(void *ctx, int mode, unsigned run, double secs, double rate) {
  load_t *L = calloc(1, sizeof *L);
  e2e_res_t res = {0};
  L->ctx = ctx;
  L->mode = mode;
  L->run = run;
  L->nprod = producers;
  L->per_window = window / producers > 0 ? window / producers : 1;
  L->rate = rate;
  long cap = mode == MODE_WARM ? (cars + producers - 1) / producers
                               : (long)((secs + ramp + 1) * 150000.0 / producers) + 1000;
  L->lat_cap = mode == MODE_WARM ? cars : cap * producers;
  L->lat = calloc((size_t)L->lat_cap, sizeof *L->lat);
  for (int p = 0; p < producers; p++) {
    L->prod[p] = (prod_t){.L = L, .id = p, .cap = cap};
    L->prod[p].sent_at = calloc((size_t)cap, sizeof *L->prod[p].sent_at);
    L->prod[p].slice = mode == MODE_WARM ? (cars - p + producers - 1) / producers : cap;
  }
  pthread_t sub, th[MAXP];
  pthread_create(&sub, NULL, sub_main, L);
  /* Let the subscription reach the publisher before anything is sent. */
  struct timespec settle = {0, 300 * 1000000L};
  nanosleep(&settle, NULL);
  sim_stats_t st0, st1;
  int st_rc = sim_stats(&st0);
  int64_t t0 = fq_mono_ns();
  L->t0 = t0;
  if (mode == MODE_WARM) {
    L->win0 = t0;
    L->win1 = INT64_MAX;
  } else {
    L->win0 = t0 + (int64_t)(ramp * 1e9);
    L->win1 = L->win0 + (int64_t)(secs * 1e9);
  }
  for (int p = 0; p < producers; p++) pthread_create(&th[p], NULL, producer_main, &L->prod[p]);

  tcpu_t tc0, tc1, ts0, ts1;
  double f0 = 0, f1 = 0, s0 = 0, s1 = 0, me0 = 0, me1 = 0;
  int64_t drain_deadline;
  if (mode == MODE_MEASURE) {
    sleep_until(L->win0);
    if (perf_wanted) perf_start(secs);
    f0 = proc_cpu_us(fq_pid), s0 = proc_cpu_us(sim_pid), me0 = self_cpu_us();
    thread_cpu(fq_pid, &tc0);
    thread_cpu(sim_pid, &ts0);
    sleep_until(L->win1);
    f1 = proc_cpu_us(fq_pid), s1 = proc_cpu_us(sim_pid), me1 = self_cpu_us();
    thread_cpu(fq_pid, &tc1);
    thread_cpu(sim_pid, &ts1);
    atomic_store(&L->stop, 1);
    drain_deadline = fq_mono_ns() + 30LL * 1000000000;
  } else {
    f0 = proc_cpu_us(fq_pid), s0 = proc_cpu_us(sim_pid), me0 = self_cpu_us();
    drain_deadline = t0 + 300LL * 1000000000;
  }
  /* Wait until every accepted command has reached a terminal state. */
  long total_sent = 0, total_done = 0;
  for (;;) {
    bool senders_done = true;
    total_sent = total_done = 0;
    for (int p = 0; p < producers; p++) {
      total_done += atomic_load(&L->done[p]);
      long sent = atomic_load_explicit(&L->prod[p].sent_pub, memory_order_relaxed);
      total_sent += sent;
      if (mode == MODE_WARM && sent < L->prod[p].slice) senders_done = false;
    }
    if (senders_done && total_done >= total_sent) break;
    if (fq_mono_ns() > drain_deadline) {
      atomic_store(&L->stop, 1);
      break;
    }
    struct timespec ts = {0, 10 * 1000000L};
    nanosleep(&ts, NULL);
  }
  if (mode == MODE_WARM) {
    f1 = proc_cpu_us(fq_pid), s1 = proc_cpu_us(sim_pid), me1 = self_cpu_us();
    atomic_store(&L->stop, 1);
  }
  for (int p = 0; p < producers; p++) pthread_join(th[p], NULL);
  /* Late events of this run (none expected once all are done). */
  struct timespec tail = {0, 100 * 1000000L};
  nanosleep(&tail, NULL);
  atomic_store(&L->sub_stop, 1);
  pthread_join(sub, NULL);
  if (st_rc == 0 && sim_stats(&st1) == 0)
    res.sim = (sim_stats_t){st1.requests - st0.requests - 1, st1.executions - st0.executions,
                            st1.handshakes - st0.handshakes, st1.signed_ok - st0.signed_ok,
                            st1.signed_fault - st0.signed_fault};
  else
    res.sim.requests = -1;

  for (int p = 0; p < producers; p++) {
    res.sent += L->prod[p].sent;
    res.rejected += L->prod[p].rejected;
    tally_merge(&res.rejects, &L->prod[p].rejects);
  }
  res.unfinished = total_sent - total_done;
  res.events = L->events;
  res.seq_gaps = L->seq_gaps;
  res.bad_events = L->bad_events;
  res.foreign = L->foreign;
  res.terminal_total = L->term_total;
  res.succeeded_total = L->succ_total;
  res.fails = L->fails;
  double window_s;
  if (mode == MODE_WARM) {
    window_s = (double)(L->last_term_ns - t0) / 1e9;
    res.terminal_win = L->term_total;
    res.succeeded_win = L->succ_in_win;
  } else {
    window_s = secs;
    res.terminal_win = L->term_in_win;
    res.succeeded_win = L->succ_in_win;
    tcpu_delta(&tc0, &tc1, &res.threads);
    tcpu_delta(&ts0, &ts1, &res.sim_threads);
  }
  res.elapsed = window_s;
  res.rate = window_s > 0 ? (double)res.terminal_win / window_s : 0;
  if (res.terminal_win > 0) {
    res.fq_cpu_per_cmd = (f1 - f0) / (double)res.terminal_win;
    res.sim_cpu_per_cmd = (s1 - s0) / (double)res.terminal_win;
    res.self_cpu_per_cmd = (me1 - me0) / (double)res.terminal_win;
  }
  if (window_s > 0) {
    res.fq_cores = (f1 - f0) / 1e6 / window_s;
    res.sim_cores = (s1 - s0) / 1e6 / window_s;
  }
  percentiles(L->lat, L->nlat, &res);
  for (int p = 0; p < producers; p++) free((void *)L->prod[p].sent_at);
  free(L->lat);
  free(L);
  return res;
}

/* ------------------------------------------------------------------ */
/* setup: key, config, processes, account                              */

static void kill_children(int sig) {
  if (fq_pid > 0) kill(fq_pid, SIGKILL);
  if (sim_pid > 0) kill(sim_pid, SIGKILL);
  if (sig) _exit(130);
}

static int write_file(const char *path, const void *p, size_t n, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
  if (fd < 0) return -errno;
  ssize_t w = write(fd, p, n);
  close(fd);
  return w == (ssize_t)n ? 0 : -EIO;
}

/* Fleet key: private PEM 0600 for fleetqd's --key, public PEM for the
 * simulator's fleet_public_key. */
static int make_key(void) {
  fq_err_t err;
  fq_vcp_key_t *k = NULL;
  fq_buf_t priv, pub;
  fq_buf_init(&priv, 0);
  fq_buf_init(&pub, 0);
  char path[256];
  int rc = fq_vcp_key_generate(&k, &err);
  if (!rc) rc = fq_vcp_key_private_pem(k, &priv, &err);
  if (!rc) rc = fq_vcp_key_public_pem(k, &pub, &err);
  if (!rc) {
    snprintf(path, sizeof path, "%s/private.pem", tmpdir);
    rc = write_file(path, priv.data, priv.len, 0600);
  }
  if (!rc) {
    snprintf(path, sizeof path, "%s/public.pem", tmpdir);
    rc = write_file(path, pub.data, pub.len, 0644);
  }
  if (!rc) rc = fq_vcp_key_generate(&ckey, &err);
  if (!rc) fq_hex_encode(fq_vcp_key_public(ckey), FQ_VCP_PUBKEY_LEN, ckey_hex);
  if (priv.data) OPENSSL_cleanse(priv.data, priv.len);
  fq_buf_free(&priv);
  fq_buf_free(&pub);
  fq_vcp_key_destroy(&k);
  return rc;
}

static const char *const scopes[] = {"openid", "offline_access", "vehicle_device_data",
                                     "vehicle_cmds", "vehicle_charging_cmds"};

/* JWT-shaped access token (fleetqd reads scopes and expiry from the
 * payload; the simulator accepts the exact string it was configured with). */
static void make_token(void) {
  char payload[512], h[128], pl[700];
  long now = (long)time(NULL);
  int n = snprintf(payload, sizeof payload,
                   "{\"iss\":\"https://auth.tesla.com/oauth2/v3/nts\",\"sub\":\"bench\","
                   "\"scp\":[\"%s\",\"%s\",\"%s\",\"%s\",\"%s\"],\"iat\":%ld,\"exp\":%ld,"
                   "\"aud\":[\"http://127.0.0.1\"]}",
                   scopes[0], scopes[1], scopes[2], scopes[3], scopes[4], now, now + 86400);
  static const char hdr[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
  fq_base64url_encode((const uint8_t *)hdr, sizeof hdr - 1, h);
  fq_base64url_encode((const uint8_t *)payload, (size_t)n, pl);
  snprintf(token, sizeof token, "%s.%s.%s", h, pl, "c2ln");
}

static int write_config(const char *path) {
  fq_buf_t b;
  fq_buf_init(&b, 0);
  fq_buf_printf(&b, "{\"fleet_public_key\": \"public.pem\", \"seed\": 1,\n \"accounts\": [{"
                    "\"id\": \"bench\", \"token\": \"%s\", \"refresh_token\": \"bench-refresh\", "
                    "\"scopes\": [",
                token);
  for (size_t i = 0; i < sizeof scopes / sizeof scopes[0]; i++)
    fq_buf_printf(&b, "%s\"%s\"", i ? ", " : "", scopes[i]);
  fq_buf_printf(&b, "],\n  \"vins\": [");
  for (int i = 0; i < cars; i++) {
    char vin[18];
    vin_of(i, vin);
    fq_buf_printf(&b, "%s\"%s\"", i ? (i % 8 ? "," : ",\n") : "", vin);
  }
  fq_buf_printf(&b, "]}],\n \"vehicles\": [");
  for (int i = 0; i < cars; i++) {
    char vin[18];
    vin_of(i, vin);
    fq_buf_printf(&b, "%s{\"vin\": \"%s\", \"paired_keys\": [\"%s\"]}", i ? ",\n  " : "",
                  vin, ckey_hex);
  }
  int rc = fq_buf_printf(&b, "]}\n");
  if (!rc) rc = write_file(path, b.data, b.len, 0600);
  fq_buf_free(&b);
  return rc;
}

static pid_t spawn(char *const argv[], int out_fd, const char *err_path) {
  pid_t pid = fork();
  if (pid == 0) {
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(out_fd >= 0 ? out_fd : null, 1);
    int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (e >= 0) dup2(e, 2);
    execv(argv[0], argv);
    _exit(127);
  }
  return pid;
}

static int start_sim(void) {
  char cfg[256], errp[256];
  snprintf(cfg, sizeof cfg, "%s/fleetsim.json", tmpdir);
  snprintf(errp, sizeof errp, "%s/fleetsim.err", tmpdir);
  if (write_config(cfg)) return -1;
  int fds[2];
  if (pipe(fds)) return -1;
  char *argv[] = {(char *)fleetsim_path, "--listen", "127.0.0.1:0", "--config", cfg,
                  "--log-level", "warn", NULL};
  sim_pid = spawn(argv, fds[1], errp);
  close(fds[1]);
  char line[256];
  size_t n = 0;
  int64_t deadline = fq_mono_ns() + 20LL * 1000000000;
  while (n < sizeof line - 1 && fq_mono_ns() < deadline) {
    struct pollfd pf = {fds[0], POLLIN, 0};
    if (poll(&pf, 1, 200) <= 0) continue;
    ssize_t r = read(fds[0], line + n, 1);
    if (r <= 0) break;
    if (line[n++] == '\n') break;
  }
  line[n] = 0;
  close(fds[0]);
  const char *u = strstr(line, "listening on ");
  if (!u) {
    fprintf(stderr, "bench_e2e: fleetsim did not start (%s): see %s\n", line, errp);
    return -1;
  }
  snprintf(sim_base, sizeof sim_base, "%s", u + 13);
  sim_base[strcspn(sim_base, "\r\n")] = 0;
  return 0;
}

static int ping(void *ctx) {
  void *s = zmq_socket(ctx, ZMQ_DEALER);
  int linger = 0, to = 300;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(s, ZMQ_RCVTIMEO, &to, sizeof to);
  zmq_connect(s, endpoint);
  zmq_send(s, "\x81\xa2op\xa4ping", 9, 0);
  char buf[512];
  int n = zmq_recv(s, buf, sizeof buf, 0);
  zmq_close(s);
  return n > 0 ? 0 : -1;
}

/* A loopback port free right now (the kernel's pick). */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  int port = -1;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
      getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
    port = ntohs(sa.sin_port);
  if (fd >= 0) close(fd);
  return port;
}

static int start_daemon_once(void *ctx, int *nshards);

/* Ports picked this way can be taken by someone else before fleetqd binds
 * them: try a few times. */
static int start_daemon(void *ctx, int *nshards) {
  for (int attempt = 0; attempt < 4; attempt++)
    if (start_daemon_once(ctx, nshards) == 0) return 0;
  return -1;
}

static int start_daemon_once(void *ctx, int *nshards) {
  snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", free_port());
  snprintf(pub_ep, sizeof pub_ep, "tcp://127.0.0.1:%d", free_port());
  char data[256], key[256], errp[256], sh[16];
  snprintf(data, sizeof data, "%s/data", tmpdir);
  snprintf(key, sizeof key, "%s/private.pem", tmpdir);
  snprintf(errp, sizeof errp, "%s/fleetqd.err", tmpdir);
  snprintf(sh, sizeof sh, "%d", shards);
  snprintf(metrics_addr, sizeof metrics_addr, "127.0.0.1:%d", free_port());
  char *argv[] = {(char *)fleetqd_path, "--data", data, "--key", key, "--listen", endpoint,
                  "--publish", pub_ep, "--log-level", "warn", "--metrics", metrics_addr,
                  shards > 0 ? "--shards" : NULL, sh, NULL};
  fq_pid = spawn(argv, -1, errp);
  for (int i = 0; i < 100; i++) {
    int st;
    if (waitpid(fq_pid, &st, WNOHANG) == fq_pid) {
      fq_pid = -1;
      break;
    }
    if (ping(ctx) == 0) {
      /* The ping reply says how many shards the daemon runs. */
      fq_err_t err;
      fq_client_t *c = fq_client_new(endpoint, 2000, &err);
      fq_buf_t req, rep;
      fq_buf_init(&req, 0);
      fq_buf_init(&rep, FQ_CLIENT_MAX_REPLY);
      fq_msg_t m;
      *nshards = 0;
      if (c && !fq_req_ping(&req, false, 0) &&
          !fq_client_request(c, req.data, req.len, &rep, &err) &&
          !fq_msg_decode(&m, rep.data, rep.len, &err)) {
        int64_t v;
        if (fq_mp_int(fq_mp_get(m.root, "shards"), &v)) *nshards = (int)v;
        fq_msg_free(&m);
      }
      fq_buf_free(&req);
      fq_buf_free(&rep);
      fq_client_destroy(&c);
      return 0;
    }
  }
  fprintf(stderr, "bench_e2e: fleetqd (%s) did not answer at %s: see %s\n", fleetqd_path,
          endpoint, errp);
  return -1;
}

static int add_account(void) {
  fq_err_t err;
  fq_client_t *c = fq_client_new(endpoint, 10000, &err);
  if (!c) return -1;
  fq_buf_t req, rep;
  fq_buf_init(&req, 0);
  fq_buf_init(&rep, FQ_CLIENT_MAX_REPLY);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &req, buf_write);
  msgpack_pack_map(&pk, 7);
  pk_str(&pk, "op"); pk_str(&pk, "admin");
  pk_str(&pk, "action"); pk_str(&pk, "account_add");
  pk_str(&pk, "account"); pk_str(&pk, "bench");
  pk_str(&pk, "access_token"); pk_str(&pk, token);
  pk_str(&pk, "refresh_token"); pk_str(&pk, "bench-refresh");
  pk_str(&pk, "client_id"); pk_str(&pk, "bench-client");
  pk_str(&pk, "base_url"); pk_str(&pk, sim_base);
  int rc = fq_client_request(c, req.data, req.len, &rep, &err);
  bool ok = false;
  fq_msg_t m;
  if (!rc && !fq_msg_decode(&m, rep.data, rep.len, &err)) {
    fq_mp_bool(fq_mp_get(m.root, "ok"), &ok);
    fq_msg_free(&m);
  }
  if (!ok) {
    fq_buf_t js;
    fq_buf_init(&js, 0);
    if (!rc) fq_msgpack_to_json(rep.data, rep.len, &js, 0);
    fprintf(stderr, "bench_e2e: account_add failed: %.*s\n", (int)js.len,
            js.data ? (const char *)js.data : fq_strerror(rc));
    fq_buf_free(&js);
  }
  OPENSSL_cleanse(req.data, req.len);
  fq_buf_free(&req);
  fq_buf_free(&rep);
  fq_client_destroy(&c);
  return ok ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* reporting                                                            */

static void print_tally(FILE *f, const char *title, const tally_t *t) {
  for (int i = 0; i < t->n; i++)
    fprintf(f, "    %s %s: %ld (e.g. \"%s\")\n", title, t->what[i], t->count[i], t->example[i]);
}

static void print_threads(FILE *f, const char *who, const tcpu_t *t, double secs, long cmds,
                          bool md) {
  for (int i = 0; i < t->n; i++) {
    if (t->us[i] <= 0) continue;
    /* Per thread: running, waiting for a CPU, and the rest of the wall
     * time asleep (poll, fsync, locks). */
    double wall = secs * 1e6 * t->threads[i];
    double run = t->us[i] / wall * 100, wait = t->wait_us[i] / wall * 100;
    double sleep = 100 - run - wait < 0 ? 0 : 100 - run - wait;
    if (md)
      fprintf(f, "| %s | %s%s | %.0f %% | %.0f %% | %.0f %% | %.1f |\n", who, t->name[i],
              t->threads[i] > 1 ? " (all)" : "", run, wait, sleep,
              cmds ? t->us[i] / (double)cmds : 0);
    else
      fprintf(f, "    %-8s %-16s running %5.1f %%, waiting for a CPU %5.1f %%, asleep %5.1f %%; "
                 "%6.1f us/command\n",
              who, t->name[i], run, wait, sleep, cmds ? t->us[i] / (double)cmds : 0);
  }
}

static void cpu_model(char *out, size_t cap) {
  snprintf(out, cap, "unknown CPU");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[256];
  while (fgets(line, sizeof line, f)) {
    if (!strncmp(line, "model name", 10)) {
      char *c = strchr(line, ':');
      if (c) {
        c++;
        while (*c == ' ') c++;
        c[strcspn(c, "\n")] = 0;
        snprintf(out, cap, "%s", c);
      }
      break;
    }
  }
  fclose(f);
}

/* The 1-minute load average, as text ("?" when unreadable). */
static void loadavg(char *out, size_t cap) {
  snprintf(out, cap, "?");
  FILE *f = fopen("/proc/loadavg", "r");
  if (!f) return;
  char b[64];
  if (fgets(b, sizeof b, f)) {
    b[strcspn(b, " ")] = 0;
    snprintf(out, cap, "%.16s", b);
  }
  fclose(f);
}

static void usage(void) {
  fprintf(stderr,
          "usage: bench_e2e [--fleetqd PATH] [--fleetsim PATH] [--cars N] [--producers N]\n"
          "                 [--window N (commands not yet terminal, all producers)]\n"
          "                 [--duration S (each measured phase)] [--rounds N]\n"
          "                 [--inflight N (ceiling requests in flight)] [--shards N]\n"
          "                 [--rate R (open-loop latency phase; default half the median)]\n"
          "                 [--quick] [--profile] [--perf (perf record an extra round)]\n"
          "                 [--keep (the work dir: logs, data)]\n"
          "                 [--out FILE]\n");
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--quick")) { quick = true; continue; }
    if (!strcmp(a, "--profile")) { profile = true; continue; }
    if (!strcmp(a, "--keep")) { keep = true; continue; }
    if (!strcmp(a, "--perf")) { use_perf = true; continue; }
    if (!v) { usage(); return 2; }
    if (!strcmp(a, "--fleetqd")) fleetqd_path = v;
    else if (!strcmp(a, "--fleetsim")) fleetsim_path = v;
    else if (!strcmp(a, "--cars")) cars = atoi(v);
    else if (!strcmp(a, "--producers")) producers = atoi(v);
    else if (!strcmp(a, "--window")) window = atoi(v);
    else if (!strcmp(a, "--duration")) duration = atof(v);
    else if (!strcmp(a, "--rounds")) rounds = atoi(v);
    else if (!strcmp(a, "--inflight")) inflight = atoi(v);
    else if (!strcmp(a, "--shards")) shards = atoi(v);
    else if (!strcmp(a, "--rate")) open_rate = atof(v);
    else if (!strcmp(a, "--out")) out_path = v;
    else { usage(); return 2; }
    i++;
  }
  if (quick) {
    duration = 1;
    ramp = 0.5;
    rounds = 1;
  }
  if (producers < 1 || producers > MAXP || rounds < 1 || rounds > MAXR || cars < 1 ||
      cars > 1000000 || window < producers || inflight < 1 || duration < 0.5 ||
      duration > 120 || shards < 0 || shards > MAX_SHARDS) {
    usage();
    return 2;
  }
  static char qd[4200], sim[4200];
  char self_dir[4096] = ".";
  ssize_t n = readlink("/proc/self/exe", self_dir, sizeof self_dir - 1);
  if (n > 0) {
    self_dir[n] = 0;
    char *slash = strrchr(self_dir, '/');
    if (slash) *slash = 0;
  }
  if (!fleetqd_path) {
    snprintf(qd, sizeof qd, "%s/fleetqd", self_dir);
    fleetqd_path = qd;
  }
  if (!fleetsim_path) {
    snprintf(sim, sizeof sim, "%s/fleetsim", self_dir);
    fleetsim_path = sim;
  }
  signal(SIGINT, kill_children);
  signal(SIGTERM, kill_children);
  if (!mkdtemp(tmpdir)) return 1;
  int status = 1;
  fq_buf_t perf_txt;
  fq_buf_init(&perf_txt, 0);
  void *ctx = zmq_ctx_new();
  int nshards = 0;
  char load_start[32], load_end[32];
  loadavg(load_start, sizeof load_start);
  make_token();
  if (make_key() || start_sim() || start_daemon(ctx, &nshards) || add_account()) goto out;
  int cthreads = nshards > 0 ? (nshards < MAXT ? nshards : MAXT) : 2;
  printf("bench_e2e: %d cars, fleetsim at %s (pid %d), fleetqd %d shards (pid %d, fsync on), "
         "%d producers, window %d, %.1f s per phase, %d round%s, ceiling %d in flight on %d "
         "thread%s\n",
         cars, sim_base, (int)sim_pid, nshards, (int)fq_pid, producers, window, duration, rounds,
         rounds > 1 ? "s" : "", inflight, cthreads, cthreads > 1 ? "s" : "");
  fflush(stdout);

  e2e_res_t warm = run_load(ctx, MODE_WARM, 0, 0, 0);
  printf("warm-up: %ld commands (one per car, handshake included) in %.2f s: %.0f/s, "
         "%ld succeeded, p50 %.1f ms p99 %.1f ms, fleetqd %.0f us/cmd, fleetsim %.0f us/cmd\n",
         warm.sent, warm.elapsed, warm.rate, warm.succeeded_win, warm.p50, warm.p99,
         warm.fq_cpu_per_cmd, warm.sim_cpu_per_cmd);
  printf("    fleetsim: %ld requests, %ld handshakes, %ld executions; %.2f events per command\n",
         warm.sim.requests, warm.sim.handshakes, warm.sim.executions,
         warm.terminal_total ? (double)warm.events / (double)warm.terminal_total : 0);
  print_tally(stdout, "failed", &warm.fails);
  print_tally(stdout, "refused", &warm.rejects);
  if (warm.unfinished) printf("    %ld did not finish\n", warm.unfinished);
  fflush(stdout);

  double hs_secs = 0;
  bool signed_ok = ceiling_handshakes(&hs_secs) == 0;
  if (signed_ok)
    printf("signed ceiling: %d handshakes with a second paired key in %.2f s (%.0f/s)\n", cars,
           hs_secs, hs_secs > 0 ? cars / hs_secs : 0);
  e2e_res_t res[MAXR];
  ceil_res_t cg[MAXR], cp[MAXR], cs_[MAXR];
  memset(cs_, 0, sizeof cs_);
  double e2e_rates[MAXR], get_rates[MAXR], post_rates[MAXR], signed_rates[MAXR], fq_cpu[MAXR],
      sim_cpu[MAXR], self_cpu[MAXR];
  long failures = warm.unfinished + tally_total(&warm.fails) + warm.rejected;
  for (int r = 0; r < rounds; r++) {
    res[r] = run_load(ctx, MODE_MEASURE, (unsigned)r + 1, duration, 0);
    e2e_res_t *e = &res[r];
    printf("round %d: e2e %.0f commands/s (%ld terminal in %.1f s, %ld succeeded), "
           "p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f max %.1f ms; fleetqd %.1f us/cmd (%.2f cores), "
           "fleetsim %.1f us/cmd (%.2f cores), bench %.1f us/cmd\n",
           r + 1, e->rate, e->terminal_win, duration, e->succeeded_win, e->p50, e->p90, e->p99,
           e->p999, e->max, e->fq_cpu_per_cmd, e->fq_cores, e->sim_cpu_per_cmd, e->sim_cores,
           e->self_cpu_per_cmd);
    printf("    fleetsim: %ld requests (%.2f per command), %ld executions for %ld succeeded "
           "events, %ld handshakes, %ld faults; %.2f events per command\n",
           e->sim.requests,
           e->terminal_total ? (double)e->sim.requests / (double)e->terminal_total : 0,
           e->sim.executions, e->succeeded_total, e->sim.handshakes, e->sim.signed_fault,
           e->terminal_total ? (double)e->events / (double)e->terminal_total : 0);
    print_tally(stdout, "failed", &e->fails);
    print_tally(stdout, "refused", &e->rejects);
    if (e->unfinished || e->seq_gaps || e->bad_events || e->foreign)
      printf("    %ld unfinished, %ld events lost (seq gaps), %ld unreadable, %ld foreign\n",
             e->unfinished, e->seq_gaps, e->bad_events, e->foreign);
    if (profile) {
      print_threads(stdout, "fleetqd", &e->threads, duration, e->terminal_win, false);
      print_threads(stdout, "fleetsim", &e->sim_threads, duration, e->terminal_win, false);
    }
    failures += e->unfinished + tally_total(&e->fails) + e->rejected;
    fflush(stdout);
    cg[r] = run_ceiling(C_GET, cthreads, duration);
    printf("         ceiling GET  %.0f req/s (fleetsim %.1f us/req, client %.1f us/req, "
           "%ld failed%s%s)\n",
           cg[r].rate, cg[r].sim_cpu_per_req, cg[r].self_cpu_per_req, cg[r].failed,
           cg[r].first_err[0] ? ": " : "", cg[r].first_err);
    fflush(stdout);
    cp[r] = run_ceiling(C_WAKE, cthreads, duration);
    printf("         ceiling POST %.0f req/s (fleetsim %.1f us/req, client %.1f us/req, "
           "%ld failed%s%s)\n",
           cp[r].rate, cp[r].sim_cpu_per_req, cp[r].self_cpu_per_req, cp[r].failed,
           cp[r].first_err[0] ? ": " : "", cp[r].first_err);
    fflush(stdout);
    if (signed_ok) {
      cs_[r] = run_ceiling(C_SIGNED, cthreads, duration);
      printf("         ceiling SIGNED %.0f req/s (fleetsim %.1f us/req, client incl. signing "
             "%.1f us/req, %ld executed, %ld faults, %ld failed%s%s)\n",
             cs_[r].rate, cs_[r].sim_cpu_per_req, cs_[r].self_cpu_per_req, cs_[r].sim_exec,
             cs_[r].sim_fault, cs_[r].failed, cs_[r].first_err[0] ? ": " : "",
             cs_[r].first_err);
      failures += cs_[r].sim_fault;
      fflush(stdout);
    }
    signed_rates[r] = cs_[r].rate;
    e2e_rates[r] = e->rate;
    get_rates[r] = cg[r].rate;
    post_rates[r] = cp[r].rate;
    fq_cpu[r] = e->fq_cpu_per_cmd;
    sim_cpu[r] = e->sim_cpu_per_cmd;
    self_cpu[r] = e->self_cpu_per_cmd;
  }
  double e_med = median(e2e_rates, rounds), g_med = median(get_rates, rounds),
         p_med = median(post_rates, rounds), ceil_med = g_med > p_med ? g_med : p_med;
  int mi = 0;
  for (int r = 0; r < rounds; r++)
    if (e2e_rates[r] == e_med) mi = r;
  e2e_res_t *m = &res[mi];
  double s_med = signed_ok ? median(signed_rates, rounds) : 0;
  /* Each round's e2e phase and its ceilings run back to back, so per-round
   * ratios cancel part of what the machine's other load does. */
  double rr[MAXR], rs[MAXR];
  for (int r = 0; r < rounds; r++) {
    double hi = get_rates[r] > post_rates[r] ? get_rates[r] : post_rates[r];
    rr[r] = hi > 0 ? e2e_rates[r] / hi : 0;
    rs[r] = signed_rates[r] > 0 ? e2e_rates[r] / signed_rates[r] : 0;
  }
  double rr_med = median(rr, rounds), rs_med = median(rs, rounds);
  double rs_min = rs[0];
  for (int r = 1; r < rounds; r++)
    if (rs[r] < rs_min) rs_min = rs[r];

  printf("median of %d: e2e %.0f commands/s | ceiling GET %.0f req/s, POST %.0f req/s | "
         "ratio %.2f of the higher ceiling | latency p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f "
         "max %.1f ms | fleetqd %.1f us/cmd, fleetsim %.1f us/cmd\n",
         rounds, e_med, g_med, p_med, ceil_med > 0 ? e_med / ceil_med : 0, m->p50, m->p90, m->p99,
         m->p999, m->max, median(fq_cpu, rounds), median(sim_cpu, rounds));
  if (signed_ok)
    printf("signed-command ceiling (the same requests fleetqd sends, signed by a bare client): "
           "%.0f req/s; e2e / signed ceiling %.2f\n",
           s_med, s_med > 0 ? e_med / s_med : 0);
  printf("median of per-round ratios: e2e / higher ceiling %.2f, e2e / signed ceiling %.2f\n",
         rr_med, rs_med);
  if (signed_ok)
    printf("done-when check: e2e / ceiling for the same requests (signed_command) median %.2f, "
           "lowest round %.2f: %s\n",
           rs_med, rs_min, rs_min >= 0.5 ? "at least 0.5 in every round" : "BELOW 0.5 in a round");
  /* The CPU budget: what one command costs end to end against what one
   * ceiling request costs, both measured above.  On a machine doing only
   * this, rates are bounded by CPUs / cost, so the ratio of the costs is
   * what the throughput ratio tends to once every process gets CPU. */
  bool post_hi = p_med >= g_med;
  double cl[MAXR], cs[MAXR];
  for (int r = 0; r < rounds; r++) {
    cl[r] = post_hi ? cp[r].self_cpu_per_req : cg[r].self_cpu_per_req;
    cs[r] = post_hi ? cp[r].sim_cpu_per_req : cg[r].sim_cpu_per_req;
  }
  double b_fq = median(fq_cpu, rounds), b_sim = median(sim_cpu, rounds),
         b_self = median(self_cpu, rounds), b_cl = median(cl, rounds), b_cs = median(cs, rounds);
  double cost_e2e = b_fq + b_sim + b_self, cost_ceil = b_cl + b_cs;
  double fq_budget = 2 * cost_ceil - b_sim - b_self;
  double scl[MAXR], scs[MAXR];
  for (int r = 0; r < rounds; r++) {
    scl[r] = cs_[r].self_cpu_per_req;
    scs[r] = cs_[r].sim_cpu_per_req;
  }
  double b_scl = median(scl, rounds), b_scs = median(scs, rounds);
  printf("CPU budget: a command costs %.1f us end to end (fleetqd %.1f + fleetsim %.1f + bench "
         "%.1f), a %s ceiling request %.1f us (client %.1f + fleetsim %.1f): cost ratio %.2f; "
         "e2e >= 0.5 x ceiling needs fleetqd <= %.1f us per command\n",
         cost_e2e, b_fq, b_sim, b_self, post_hi ? "POST" : "GET", cost_ceil, b_cl, b_cs,
         cost_e2e > 0 ? cost_ceil / cost_e2e : 0, fq_budget);
  if (signed_ok)
    printf("            a signed ceiling request costs %.1f us (client incl. signing %.1f + "
           "fleetsim %.1f): fleetqd spends %.1f us per command beyond a bare client\n",
           b_scl + b_scs, b_scl, b_scs, b_fq - b_scl);

  /* Latency at half the measured throughput (or --rate), open loop. */
  double half_rate = open_rate > 0 ? open_rate : e_med / 2;
  e2e_res_t half = {0};
  static waits_t half_w0, half_w1;
  if (half_rate >= 1) {
    scrape_waits(&half_w0);
    half = run_load(ctx, MODE_MEASURE, (unsigned)rounds + 1, duration, half_rate);
    scrape_waits(&half_w1);
    printf("half load: offered %.0f/s, achieved %.0f commands/s, p50 %.1f p90 %.1f p99 %.1f "
           "p99.9 %.1f max %.1f ms (from the intended send time); fleetqd %.1f us/cmd "
           "(%.2f cores)\n",
           half_rate, half.rate, half.p50, half.p90, half.p99, half.p999, half.max,
           half.fq_cpu_per_cmd, half.fq_cores);
    printf("half load, where a command waits (fleetqd's histograms, bucket bounds): ");
    print_waits(stdout, &half_w0, &half_w1);
    printf("\n");
    print_tally(stdout, "failed", &half.fails);
    print_tally(stdout, "refused", &half.rejects);
    failures += half.unfinished + tally_total(&half.fails) + half.rejected;
  }
  if (use_perf) {
    perf_wanted = true;
    e2e_res_t pr = run_load(ctx, MODE_MEASURE, (unsigned)rounds + 2, duration, 0);
    perf_wanted = false;
    perf_report(&perf_txt);
    printf("profiled round (not counted): %.0f commands/s under perf record\n%.*s", pr.rate,
           (int)perf_txt.len, perf_txt.data ? (const char *)perf_txt.data : "");
  }
  status = failures ? 1 : 0;
  loadavg(load_end, sizeof load_end);

  FILE *f = fopen(out_path, "w");
  if (f) {
    struct utsname u;
    uname(&u);
    time_t now = time(NULL);
    char date[64], cpu[160];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    cpu_model(cpu, sizeof cpu);
    int maj, min, pat, lmaj, lmin, lpat;
    zmq_version(&maj, &min, &pat);
    mdb_version(&lmaj, &lmin, &lpat);
    fprintf(f, "# End-to-end dispatch benchmark (bench_e2e)\n\n");
    fprintf(f, "Date: %s. Machine: %s %s %s, %s, %ld CPUs online (shared with other work). "
               "fleetq %s, libzmq %d.%d.%d, libcurl %s, LMDB %d.%d.%d, %s. Load average "
               "(1 min) at the start %s, at the end %s.\n\n",
            date, u.sysname, u.release, u.machine, cpu, sysconf(_SC_NPROCESSORS_ONLN), FQ_VERSION,
            maj, min, pat, curl_version_info(CURLVERSION_NOW)->version, lmaj, lmin, lpat,
            OPENSSL_VERSION_TEXT, load_start, load_end);
    fprintf(f, "Setup: fleetsim (plain HTTP on loopback) with %d paired, awake cars in one "
               "account; fleetqd with %d shards, fsync on (the default), a fleet key and the "
               "account added through an admin `account_add`. Everything on this one machine: "
               "fleetsim, fleetqd and the benchmark share the CPUs.\n\n",
            cars, nshards);
    fprintf(f, "Workload: %d DEALER producers, at most %d commands not yet terminal in all; "
               "set_charge_limit / set_charging_amps with valid values for cars chosen "
               "uniformly, unique keys; a SUB socket on the publish endpoint counts terminal "
               "events. Throughput = terminal events per second in a %.1f s steady window "
               "(after %.1f s of ramp); latency = submit send time to the `succeeded` event. "
               "Ceiling: fq_http (the shard's client code) on %d thread%s (as many as fleetqd "
               "has shards), %d requests in flight in all, keep-alive, against the same "
               "simulator for the same duration: `GET /api/1/vehicles/{vin}` and `POST "
               "/api/1/vehicles/{vin}/wake_up` (awake cars: no state change, a small JSON "
               "answer).\n\n",
            producers, window, duration, ramp, cthreads, cthreads > 1 ? "s" : "", inflight);
    fprintf(f, "Warm-up (one command per car, each with its session handshake): %ld commands "
               "in %.2f s = **%.0f commands/s**, p50 %.1f ms, p99 %.1f ms; fleetqd %.0f us and "
               "fleetsim %.0f us CPU per command.\n\n",
            warm.sent, warm.elapsed, warm.rate, warm.p50, warm.p99, warm.fq_cpu_per_cmd,
            warm.sim_cpu_per_cmd);
    fprintf(f, "| round | e2e commands/s | p50 / p90 / p99 / p99.9 / max ms | fleetqd us/cmd | "
               "fleetsim us/cmd | bench us/cmd | ceiling GET req/s | ceiling POST req/s | "
               "ceiling signed req/s | failed |\n|---:|---:|---|---:|---:|---:|---:|---:|---:|"
               "---:|\n");
    for (int r = 0; r < rounds; r++)
      fprintf(f, "| %d | %.0f | %.1f / %.1f / %.1f / %.1f / %.1f | %.1f | %.1f | %.1f | %.0f | "
                 "%.0f | %.0f | %ld |\n",
              r + 1, res[r].rate, res[r].p50, res[r].p90, res[r].p99, res[r].p999, res[r].max,
              res[r].fq_cpu_per_cmd, res[r].sim_cpu_per_cmd, res[r].self_cpu_per_cmd,
              cg[r].rate, cp[r].rate, cs_[r].rate,
              res[r].unfinished + tally_total(&res[r].fails) + res[r].rejected);
    if (signed_ok)
      fprintf(f, "\n**Against the libcurl-multi ceiling for the same requests** (a bare fq_http "
                 "multi client sending the signed `set_charge_limit` commands fleetqd sends, to "
                 "the same simulator, in the same round): e2e / ceiling median **%.2f**, lowest "
                 "round **%.2f** (%s), with durability on (fsync per group commit).\n",
              rs_med, rs_min, rs_min >= 0.5 ? "at least 0.5 in every round" : "below 0.5 in a round");
    fprintf(f, "\n**Median of %d rounds: %.0f commands/s end to end; libcurl-multi ceiling "
               "%.0f req/s (GET) and %.0f req/s (POST); e2e / higher ceiling = %.2f** "
               "(e2e / GET %.2f, e2e / POST %.2f).\n\n",
            rounds, e_med, g_med, p_med, ceil_med > 0 ? e_med / ceil_med : 0,
            g_med > 0 ? e_med / g_med : 0, p_med > 0 ? e_med / p_med : 0);
    fprintf(f, "Median of the per-round ratios (each round's phases run back to back): e2e / "
               "higher ceiling **%.2f**, e2e / signed ceiling **%.2f**.\n\n",
            rr_med, rs_med);
    if (signed_ok)
      fprintf(f, "Signed-command ceiling: the requests fleetqd sends (`POST .../signed_command`, "
                 "set_charge_limit signed with HMAC sessions, executed by the cars), made by a "
                 "bare fq_http client with its own paired key and one session per car "
                 "(%d handshakes in %.2f s before the rounds): median **%.0f req/s**, e2e / "
                 "signed ceiling = **%.2f**. A signed request costs %.1f us (client incl. "
                 "signing %.1f + fleetsim %.1f), so fleetqd spends about %.1f us per command "
                 "beyond what a bare client needs for the same request.\n\n",
              cars, hs_secs, s_med, s_med > 0 ? e_med / s_med : 0, b_scl + b_scs, b_scl, b_scs,
              b_fq - b_scl);
    if (half_rate >= 1)
      fprintf(f, "Latency at %s (open loop, %.0f commands/s offered, timed from the "
                 "intended send time): achieved %.0f/s, p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, "
                 "p99.9 %.1f ms, max %.1f ms; fleetqd %.1f us CPU per command.\n\n",
              open_rate > 0 ? "a fixed rate" : "half load", half_rate, half.rate, half.p50,
              half.p90, half.p99, half.p999, half.max, half.fq_cpu_per_cmd);
    if (half_rate >= 1) {
      fprintf(f, "Where a command waits in that phase (fleetqd's `--metrics` histograms, scraped "
                 "before and after it; upper bounds of their buckets): ");
      print_waits(f, &half_w0, &half_w1);
      fprintf(f, ".\n\n");
    }
    fprintf(f, "CPU per command (median): fleetqd %.1f us, fleetsim %.1f us, benchmark "
               "process %.1f us. In the ceiling runs fleetsim spent %.1f us (GET) / %.1f us "
               "(POST) per request.\n\n",
            median(fq_cpu, rounds), median(sim_cpu, rounds), median(self_cpu, rounds),
            cg[mi].sim_cpu_per_req, cp[mi].sim_cpu_per_req);
    fprintf(f, "**CPU budget.** One command costs %.1f us of CPU end to end (fleetqd %.1f + "
               "fleetsim %.1f + benchmark %.1f); one request of the higher (%s) ceiling costs "
               "%.1f us (client %.1f + fleetsim %.1f). With every process getting the CPU it "
               "wants, throughput is CPUs / cost, so the ratio tends to %.2f. Reaching 0.5 x "
               "the ceiling needs about %.1f us per command in all, i.e. fleetqd at or below "
               "**%.1f us per command** (today %.1f), or a cheaper simulator path for signed "
               "commands.\n\n",
            cost_e2e, b_fq, b_sim, b_self, post_hi ? "POST" : "GET", cost_ceil, b_cl, b_cs,
            cost_e2e > 0 ? cost_ceil / cost_e2e : 0, 2 * cost_ceil, fq_budget, b_fq);
    fprintf(f, "Per-thread CPU during the median round's window (CPU per "
               "command; running, runnable but waiting for a CPU, asleep: shares of the wall time "
               "per thread, from /proc/PID/task/*/stat and schedstat):\n\n| process | thread | "
               "running | waiting for a CPU | asleep | CPU us/command |\n"
               "|---|---|---:|---:|---:|---:|\n");
    print_threads(f, "fleetqd", &m->threads, duration, m->terminal_win, true);
    print_threads(f, "fleetsim", &m->sim_threads, duration, m->terminal_win, true);
    if (m->fails.n || m->rejects.n) {
      fprintf(f, "\nFailures in the median round:\n\n");
      print_tally(f, "failed", &m->fails);
      print_tally(f, "refused", &m->rejects);
    }
    if (perf_txt.len)
      fprintf(f, "\n## perf record of fleetqd (an extra round, not counted above)\n\n%.*s",
              (int)perf_txt.len, (const char *)perf_txt.data);
    fprintf(f, "\nRe-run: `build/bin/bench_e2e%s` (options: --cars --producers --window "
               "--duration --rounds --inflight --shards --rate --profile --perf --keep; "
               "--quick for a short check). The machine is shared: other engineers' builds and "
               "tests run at the same time, so rounds vary; the ratio compares phases of the "
               "same run.\n",
            quick ? " --quick" : "");
    fclose(f);
    printf("wrote %s\n", out_path);
  } else {
    fprintf(stderr, "cannot write %s: %s\n", out_path, fq_strerror(-errno));
  }

out:
  if (fq_pid > 0) {
    int st;
    kill(fq_pid, SIGTERM);
    waitpid(fq_pid, &st, 0);
  }
  if (sim_pid > 0) {
    int st;
    kill(sim_pid, SIGTERM);
    waitpid(sim_pid, &st, 0);
  }
  zmq_ctx_term(ctx);
  fq_buf_free(&perf_txt);
  for (int i = 0; csess && i < cars; i++) fq_vcp_session_destroy(&csess[i]);
  free(csess);
  fq_vcp_key_destroy(&ckey);
  if (keep) {
    printf("kept %s (fleetqd.err, fleetsim.err, data/)\n", tmpdir);
  } else {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd)) {
    }
  }
  return status;
}
