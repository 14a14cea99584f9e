/*
 * bench_ingest: durable ingest throughput and ack latency of a real fleetqd
 * on loopback, next to the two ceilings it is built on, measured in the
 * same run:
 *   1. ZeroMQ DEALER/ROUTER round trips with the same message sizes and the
 *      same producers / pipelining, against an in-process echo ROUTER;
 *   2. LMDB batched puts with fsync (records of the size fleetqd stores,
 *      committed in batches like its group commit).
 * Then latency at half the measured maximum, sent open-loop at a fixed rate
 * (latency counted from the intended send time).
 *
 * The submits name account acct-1, which bench_ingest adds first (admin
 * account_add): fleetqd refuses submits for accounts it does not have
 * (unknown_account), and the account check is part of the path measured.
 * The daemons it starts run with --no-dispatch, so no Fleet API traffic
 * competes with ingest (end to end with dispatch is bench_e2e); with
 * --endpoint the running daemon gets the account added the same way.
 *
 * With --curve, a second fleetqd with CURVE on (a server key, one client
 * key in its clients file) runs beside the plaintext one, and every round
 * measures both, one after the other, with the same load: throughput, ack
 * latency and the daemon's CPU time per ack (from /proc/<pid>/stat), and
 * the median of the per-round CURVE / plaintext ratios.
 *
 * usage: bench_ingest [--fleetqd PATH] [--producers N] [--count N]
 *                     [--window N] [--devices N] [--rounds N] [--out FILE]
 *                     [--curve]
 */
#include <errno.h>
#include <inttypes.h>
#include <lmdb.h>
#include <math.h>
#include <msgpack.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "util.h"

static int producers = 4, window = 256, devices = 10000, rounds = 3;
static long count = 100000; /* per producer, max-throughput phase */
static const char *fleetqd_path = NULL, *out_path = "perf/results/ingest.md";
static const char *external_ep = NULL; /* --endpoint: use a running daemon */
static double fixed_rate = 0;          /* --rate: open-loop phase rate (default: half the max) */
static int port_base = 0, pub_port = 0;
static char endpoint[64];
/* --curve: the CURVE daemon's endpoint and the keys its producers use. */
static int use_curve = 0;
static char curve_ep[64], srv_pub[41], cli_pub[41], cli_sec[41];

static int buf_write(void *data, const char *p, size_t n) {
  return fq_buf_append((fq_buf_t *)data, p, n) ? -1 : 0;
}

static void pk_str(msgpack_packer *pk, const char *s) {
  size_t n = strlen(s);
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, s, n);
}

static const char vinchars[] = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789";

/* A submit like an upstream service sends: set_charge_limit on one of
 * `devices` cars, a unique key, and `req` carrying the request index. */
static void make_submit(fq_buf_t *b, uint64_t run, int producer, long i, uint32_t *rng) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, b, buf_write);
  *rng = *rng * 1664525u + 1013904223u;
  unsigned dev = (*rng >> 8) % (unsigned)devices;
  char vin[18], key[64];
  snprintf(vin, sizeof vin, "5YJ3E1EA%09u", dev);
  for (int k = 8; k < 17; k++) vin[k] = vinchars[(vin[k] - '0' + k) % 33];
  snprintf(key, sizeof key, "bench-%" PRIu64 "-%d-%ld", run, producer, i);
  msgpack_pack_map(&pk, 8);
  pk_str(&pk, "op"); pk_str(&pk, "submit");
  pk_str(&pk, "tenant"); pk_str(&pk, "bench");
  pk_str(&pk, "key"); pk_str(&pk, key);
  pk_str(&pk, "account"); pk_str(&pk, "acct-1");
  pk_str(&pk, "vin"); pk_str(&pk, vin);
  pk_str(&pk, "command"); pk_str(&pk, "set_charge_limit");
  pk_str(&pk, "params");
  msgpack_pack_map(&pk, 1);
  pk_str(&pk, "percent");
  msgpack_pack_int(&pk, 50 + (int)(i % 51));
  pk_str(&pk, "req");
  msgpack_pack_int64(&pk, i);
}

/* Index carried back in `req`: the reply's last key. */
static long reply_req(const uint8_t *p, size_t n, int *ok) {
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  long r = -1;
  *ok = 0;
  if (msgpack_unpack_next(&u, (const char *)p, n, NULL) == MSGPACK_UNPACK_SUCCESS &&
      u.data.type == MSGPACK_OBJECT_MAP) {
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
      msgpack_object k = u.data.via.map.ptr[i].key, v = u.data.via.map.ptr[i].val;
      if (k.type != MSGPACK_OBJECT_STR) continue;
      if (k.via.str.size == 3 && !memcmp(k.via.str.ptr, "req", 3) &&
          v.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        r = (long)v.via.u64;
      if (k.via.str.size == 2 && !memcmp(k.via.str.ptr, "ok", 2) &&
          v.type == MSGPACK_OBJECT_BOOLEAN)
        *ok = v.via.boolean;
    }
  }
  msgpack_unpacked_destroy(&u);
  return r;
}

typedef struct job {
  void *ctx;
  const char *ep;
  int id;
  long n;
  uint64_t run;
  double rate;        /* per producer per second; 0 = closed loop with `window` */
  int64_t *lat_ns;    /* n entries */
  long acked, errors;
  int echo;           /* 1: peer is the echo ROUTER (replies carry our bytes) */
  int curve;          /* 1: connect with CURVE (cli_* keys, srv_pub) */
} job_t;

static void *producer_main(void *arg) {
  job_t *j = arg;
  void *s = zmq_socket(j->ctx, ZMQ_DEALER);
  int hwm = 0, linger = 0;
  zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
  zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  if (j->curve) {
    zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, srv_pub, 40);
    zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, cli_pub, 40);
    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, cli_sec, 40);
  }
  zmq_connect(s, j->ep);
  int64_t *sent_at = calloc((size_t)j->n, sizeof *sent_at);
  fq_buf_t b;
  fq_buf_init(&b, 0);
  uint32_t rng = 12345u + (uint32_t)j->id * 7919u;
  long next = 0, inflight = 0;
  int64_t t0 = fq_mono_ns();
  int64_t deadline = t0 + 120LL * 1000000000LL;
  while (j->acked + j->errors < j->n && fq_mono_ns() < deadline) {
    /* Send what the window or the schedule allows. */
    while (next < j->n) {
      int64_t now = fq_mono_ns();
      int64_t due = j->rate > 0 ? t0 + (int64_t)((double)next * 1e9 / j->rate) : now;
      if (j->rate > 0 ? due > now : inflight >= window) break;
      fq_buf_reset(&b);
      make_submit(&b, j->run, j->id, next, &rng);
      sent_at[next] = j->rate > 0 ? due : now;
      zmq_send(s, b.data, b.len, 0);
      next++;
      inflight++;
    }
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    long wait_ms = 1;
    if (j->rate <= 0 || next >= j->n) wait_ms = 100;
    if (zmq_poll(&it, 1, wait_ms) <= 0) continue;
    zmq_msg_t m;
    zmq_msg_init(&m);
    while (zmq_msg_recv(&m, s, ZMQ_DONTWAIT) >= 0) {
      int ok;
      long r = reply_req(zmq_msg_data(&m), zmq_msg_size(&m), &ok);
      if (j->echo) ok = 1;
      if (r >= 0 && r < j->n) {
        j->lat_ns[j->acked + j->errors] = fq_mono_ns() - sent_at[r];
        if (ok)
          j->acked++;
        else
          j->errors++;
        inflight--;
      }
    }
    zmq_msg_close(&m);
  }
  fq_buf_free(&b);
  free(sent_at);
  zmq_close(s);
  return NULL;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

typedef struct result {
  double rate;                 /* acks per second */
  double p50, p99, p999, max;  /* ms */
  long acked, errors;
} result_t;

static result_t run_load_c(void *ctx, const char *ep, long per_producer, double total_rate,
                           uint64_t run, int echo, int curve) {
  job_t jobs[64];
  pthread_t th[64];
  int64_t *all = calloc((size_t)per_producer * (size_t)producers, sizeof *all);
  int64_t t0 = fq_mono_ns();
  for (int i = 0; i < producers; i++) {
    jobs[i] = (job_t){.ctx = ctx, .ep = ep, .id = i, .n = per_producer, .run = run,
                      .rate = total_rate > 0 ? total_rate / producers : 0,
                      .lat_ns = calloc((size_t)per_producer, sizeof(int64_t)), .echo = echo,
                      .curve = curve};
    pthread_create(&th[i], NULL, producer_main, &jobs[i]);
  }
  result_t r = {0};
  size_t n = 0;
  for (int i = 0; i < producers; i++) {
    pthread_join(th[i], NULL);
    r.acked += jobs[i].acked;
    r.errors += jobs[i].errors;
    memcpy(all + n, jobs[i].lat_ns, (size_t)(jobs[i].acked + jobs[i].errors) * sizeof *all);
    n += (size_t)(jobs[i].acked + jobs[i].errors);
    free(jobs[i].lat_ns);
  }
  double secs = (double)(fq_mono_ns() - t0) / 1e9;
  qsort(all, n, sizeof *all, cmp_i64);
  r.rate = (double)r.acked / secs;
  if (n) {
    r.p50 = (double)all[n / 2] / 1e6;
    r.p99 = (double)all[(size_t)((double)n * 0.99)] / 1e6;
    r.p999 = (double)all[(size_t)((double)n * 0.999)] / 1e6;
    r.max = (double)all[n - 1] / 1e6;
  }
  free(all);
  return r;
}

static result_t run_load(void *ctx, const char *ep, long per_producer, double total_rate,
                         uint64_t run, int echo) {
  return run_load_c(ctx, ep, per_producer, total_rate, run, echo, 0);
}

/* --- ceiling 1: ZeroMQ echo ROUTER ------------------------------------ */

static volatile int echo_stop;
static void *echo_main(void *arg) {
  void *s = arg;
  while (!echo_stop) {
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 50) <= 0) continue;
    for (;;) {
      zmq_msg_t id, body;
      zmq_msg_init(&id);
      zmq_msg_init(&body);
      if (zmq_msg_recv(&id, s, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&id);
        zmq_msg_close(&body);
        break;
      }
      zmq_msg_recv(&body, s, 0);
      zmq_msg_send(&id, s, ZMQ_SNDMORE);
      zmq_msg_send(&body, s, 0);
      zmq_msg_close(&id);
      zmq_msg_close(&body);
    }
  }
  return NULL;
}

/* --- ceiling 2: LMDB batched puts with fsync ---------------------------- */

static double lmdb_ceiling(const char *dir, long items, int batch, size_t vsize) {
  MDB_env *env;
  MDB_dbi dbi;
  MDB_txn *txn;
  mdb_env_create(&env);
  mdb_env_set_mapsize(env, (size_t)4 << 30);
  mkdir(dir, 0700);
  if (mdb_env_open(env, dir, 0, 0600) != 0) return 0;
  mdb_txn_begin(env, NULL, 0, &txn);
  mdb_dbi_open(txn, NULL, 0, &dbi);
  mdb_txn_commit(txn);
  uint8_t *val = calloc(1, vsize);
  uint32_t rng = 99;
  int64_t t0 = fq_mono_ns();
  for (long i = 0; i < items;) {
    mdb_txn_begin(env, NULL, 0, &txn);
    for (int k = 0; k < batch && i < items; k++, i++) {
      char key[32];
      rng = rng * 1664525u + 1013904223u;
      int kl = snprintf(key, sizeof key, "%08x-%ld", rng, i);
      MDB_val mk = {(size_t)kl, key}, mv = {vsize, val};
      mdb_put(txn, dbi, &mk, &mv, 0);
    }
    mdb_txn_commit(txn); /* fsync */
  }
  double secs = (double)(fq_mono_ns() - t0) / 1e9;
  mdb_env_close(env);
  free(val);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd)) {
  }
  return (double)items / secs;
}

/* --- the daemon ---------------------------------------------------------- */

/* A TCP port on 127.0.0.1 that is free right now (the kernel picks it). */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t l = sizeof a;
  int port = -1;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &l) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0) close(fd);
  return port;
}

/* Start fleetqd on 127.0.0.1:port (PUB on pport); curve_dir non-NULL: with
 * the CURVE key files written there. */
static pid_t start_daemon_on(const char *data, int port, int pport, const char *curve_dir) {
  char listen[64], publish[64], key[340], clients[340];
  snprintf(listen, sizeof listen, "tcp://127.0.0.1:%d", port);
  snprintf(publish, sizeof publish, "tcp://127.0.0.1:%d", pport);
  if (curve_dir) {
    snprintf(key, sizeof key, "%s/server.key", curve_dir);
    snprintf(clients, sizeof clients, "%s/clients.json", curve_dir);
  }
  pid_t pid = fork();
  if (pid == 0) {
    if (curve_dir)
      execl(fleetqd_path, fleetqd_path, "--data", data, "--listen", listen, "--publish", publish,
            "--log-level", "warn", "--no-dispatch", "--curve-secret", key, "--clients", clients,
            (char *)NULL);
    else
      execl(fleetqd_path, fleetqd_path, "--data", data, "--listen", listen, "--publish",
            publish, "--log-level", "warn", "--no-dispatch", (char *)NULL);
    _exit(127);
  }
  return pid;
}

static pid_t start_daemon(const char *data) {
  return start_daemon_on(data, port_base, pub_port, NULL);
}

/* Key files for the CURVE daemon: its server key and a clients file with
 * the producers' key (every tenant, submit only).  Returns 0 or -1. */
static int write_curve_files(const char *dir) {
  char srv_sec[41], path[340];
  if (zmq_curve_keypair(srv_pub, srv_sec) != 0 || zmq_curve_keypair(cli_pub, cli_sec) != 0)
    return -1;
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) return -1;
  snprintf(path, sizeof path, "%s/server.key", dir);
  FILE *f = fopen(path, "w");
  if (!f) return -1;
  chmod(path, 0600);
  fprintf(f, "public %s\nsecret %s\n", srv_pub, srv_sec);
  fclose(f);
  snprintf(path, sizeof path, "%s/clients.json", dir);
  if (!(f = fopen(path, "w"))) return -1;
  chmod(path, 0600);
  fprintf(f, "[{\"name\": \"bench\", \"key\": \"%s\", \"tenants\": [\"*\"], "
             "\"roles\": [\"submit\", \"admin\"]}]\n",
          cli_pub);
  fclose(f);
  return 0;
}

/* CPU seconds (user + system) a process has used so far. */
static double cpu_seconds(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  const char *p = strrchr(buf, ')'); /* the name may hold spaces */
  unsigned long ut = 0, st = 0;
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
    return 0;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int ping_c(void *ctx, const char *ep, int curve) {
  void *s = zmq_socket(ctx, ZMQ_DEALER);
  int linger = 0, to = 300;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(s, ZMQ_RCVTIMEO, &to, sizeof to);
  if (curve) {
    zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, srv_pub, 40);
    zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, cli_pub, 40);
    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, cli_sec, 40);
  }
  zmq_connect(s, ep);
  zmq_send(s, "\x81\xa2op\xa4ping", 9, 0);
  char buf[256];
  int n = zmq_recv(s, buf, sizeof buf, 0);
  zmq_close(s);
  return n > 0 ? 0 : -1;
}

static int ping(void *ctx, const char *ep) { return ping_c(ctx, ep, 0); }

/* Add the account the submits name (acct-1), as `fleetq account add`
 * would: an opaque token and a loopback base URL where nothing listens
 * (the daemons started here send nothing: --no-dispatch).  Returns 0, or
 * -1 with the daemon's answer printed. */
static int add_account_c(void *ctx, const char *ep, int curve) {
  void *s = zmq_socket(ctx, ZMQ_DEALER);
  int linger = 0, to = 5000;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(s, ZMQ_RCVTIMEO, &to, sizeof to);
  if (curve) {
    zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, srv_pub, 40);
    zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, cli_pub, 40);
    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, cli_sec, 40);
  }
  zmq_connect(s, ep);
  fq_buf_t b;
  fq_buf_init(&b, 0);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &b, buf_write);
  msgpack_pack_map(&pk, 7);
  pk_str(&pk, "op"); pk_str(&pk, "admin");
  pk_str(&pk, "action"); pk_str(&pk, "account_add");
  pk_str(&pk, "account"); pk_str(&pk, "acct-1");
  pk_str(&pk, "access_token"); pk_str(&pk, "bench-opaque-token");
  pk_str(&pk, "refresh_token"); pk_str(&pk, "bench-refresh-token");
  pk_str(&pk, "client_id"); pk_str(&pk, "bench");
  pk_str(&pk, "base_url"); pk_str(&pk, "http://127.0.0.1:9");
  zmq_send(s, b.data, b.len, 0);
  fq_buf_free(&b);
  char buf[1024];
  int n = zmq_recv(s, buf, sizeof buf, 0);
  zmq_close(s);
  int ok = 0;
  if (n > 0) reply_req((const uint8_t *)buf, (size_t)(n < (int)sizeof buf ? n : (int)sizeof buf), &ok);
  if (!ok) {
    fprintf(stderr, "bench_ingest: cannot add account acct-1 at %s: %s\n", ep,
            n > 0 ? "refused (an admin request; see the daemon's log)" : "no answer");
    return -1;
  }
  return 0;
}

static double median(double *v, int n) {
  for (int i = 1; i < n; i++)
    for (int k = i; k > 0 && v[k] < v[k - 1]; k--) {
      double t = v[k];
      v[k] = v[k - 1];
      v[k - 1] = t;
    }
  return v[n / 2];
}

int main(int argc, char **argv) {
  char self_dir[4096] = ".";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--fleetqd") && i + 1 < argc) fleetqd_path = argv[++i];
    else if (!strcmp(argv[i], "--producers") && i + 1 < argc) producers = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--count") && i + 1 < argc) count = atol(argv[++i]);
    else if (!strcmp(argv[i], "--window") && i + 1 < argc) window = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--devices") && i + 1 < argc) devices = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--out") && i + 1 < argc) out_path = argv[++i];
    else if (!strcmp(argv[i], "--endpoint") && i + 1 < argc) external_ep = argv[++i];
    else if (!strcmp(argv[i], "--rate") && i + 1 < argc) fixed_rate = atof(argv[++i]);
    else if (!strcmp(argv[i], "--curve")) use_curve = 1;
    else {
      fprintf(stderr,
              "usage: bench_ingest [--fleetqd PATH] [--producers N] [--count N per producer]\n"
              "                    [--window N] [--devices N] [--rounds N] [--out FILE]\n"
              "                    [--endpoint EP (use a running fleetqd)]\n"
              "                    [--rate R (open-loop phase; default half the maximum)]\n"
              "                    [--curve (also a CURVE fleetqd, measured in the same rounds)]\n");
      return 2;
    }
  }
  if (producers < 1 || producers > 64 || rounds < 1 || rounds > 15) return 2;
  if (use_curve && external_ep) {
    fprintf(stderr, "bench_ingest: --curve starts its own daemons: not with --endpoint\n");
    return 2;
  }
  static char pathbuf[4200];
  if (!fleetqd_path) {
    ssize_t n = readlink("/proc/self/exe", self_dir, sizeof self_dir - 1);
    if (n > 0) {
      self_dir[n] = 0;
      char *slash = strrchr(self_dir, '/');
      if (slash) *slash = 0;
    }
    snprintf(pathbuf, sizeof pathbuf, "%s/fleetqd", self_dir);
    fleetqd_path = pathbuf;
  }
  port_base = free_port();
  pub_port = free_port();
  if (port_base <= 0 || pub_port <= 0 || pub_port == port_base) {
    fprintf(stderr, "bench_ingest: cannot find free loopback ports\n");
    return 1;
  }
  snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", port_base);
  char data[] = "/tmp/fq_bench_XXXXXX";
  if (!mkdtemp(data)) return 1;
  void *ctx = zmq_ctx_new();

  pid_t pid = -1;
  if (external_ep)
    snprintf(endpoint, sizeof endpoint, "%s", external_ep);
  else
    pid = start_daemon(data);
  int up = 0;
  for (int i = 0; i < 100 && !up; i++) up = ping(ctx, endpoint) == 0;
  if (!up) {
    fprintf(stderr, "bench_ingest: fleetqd (%s) did not answer at %s\n", fleetqd_path, endpoint);
    if (pid > 0) kill(pid, SIGKILL);
    return 1;
  }
  if (add_account_c(ctx, endpoint, 0) != 0) {
    if (pid > 0) kill(pid, SIGKILL);
    return 1;
  }

  pid_t cpid = -1;
  char cdata[300], cdir[300];
  if (use_curve) {
    int cport = free_port(), cpub = free_port();
    snprintf(cdata, sizeof cdata, "%s/curve-data", data);
    snprintf(cdir, sizeof cdir, "%s/curve-keys", data);
    snprintf(curve_ep, sizeof curve_ep, "tcp://127.0.0.1:%d", cport);
    if (cport <= 0 || cpub <= 0 || cport == port_base || write_curve_files(cdir) != 0) {
      fprintf(stderr, "bench_ingest: cannot set up the CURVE daemon\n");
      if (pid > 0) kill(pid, SIGKILL);
      return 1;
    }
    cpid = start_daemon_on(cdata, cport, cpub, cdir);
    up = 0;
    for (int i = 0; i < 100 && !up; i++) up = ping_c(ctx, curve_ep, 1) == 0;
    if (!up || add_account_c(ctx, curve_ep, 1) != 0) {
      if (!up) fprintf(stderr, "bench_ingest: the CURVE fleetqd did not answer at %s\n", curve_ep);
      if (pid > 0) kill(pid, SIGKILL);
      if (cpid > 0) kill(cpid, SIGKILL);
      return 1;
    }
  }

  /* Probe message size for the ceilings. */
  fq_buf_t probe;
  fq_buf_init(&probe, 0);
  uint32_t rng = 1;
  make_submit(&probe, 0, 0, 123456, &rng);
  size_t msg_size = probe.len;
  fq_buf_free(&probe);

  double fq_rates[15], zmq_rates[15], lmdb_rates[15];
  /* --curve: per round, plaintext and CURVE figures side by side. */
  double cv_rates[15], cv_ratio[15], cpu_plain[15], cpu_curve[15], cpu_ratio[15];
  result_t cv_res[15] = {{0}};
  result_t fq_res[15] = {{0}};
  printf("bench_ingest: %d producers x %ld submits, window %d, %d devices, %d rounds, msg %zu B\n",
         producers, count, window, devices, rounds, msg_size);
  /* Echo ROUTER for the ZeroMQ ceiling, in this process. */
  char echo_ep[64];
  void *echo = zmq_socket(ctx, ZMQ_ROUTER);
  int zero = 0;
  zmq_setsockopt(echo, ZMQ_SNDHWM, &zero, sizeof zero);
  zmq_setsockopt(echo, ZMQ_RCVHWM, &zero, sizeof zero);
  size_t epl = sizeof echo_ep;
  if (zmq_bind(echo, "tcp://127.0.0.1:*") != 0 ||
      zmq_getsockopt(echo, ZMQ_LAST_ENDPOINT, echo_ep, &epl) != 0) {
    fprintf(stderr, "bench_ingest: cannot bind the echo ROUTER: %s\n", zmq_strerror(errno));
    if (pid > 0) kill(pid, SIGKILL);
    return 1;
  }
  pthread_t echo_th;
  pthread_create(&echo_th, NULL, echo_main, echo);

  for (int r = 0; r < rounds; r++) {
    double c0 = pid > 0 ? cpu_seconds(pid) : 0;
    fq_res[r] = run_load(ctx, endpoint, count, 0, (uint64_t)r + 1, 0);
    fq_rates[r] = fq_res[r].rate;
    if (use_curve) {
      cpu_plain[r] = (cpu_seconds(pid) - c0) * 1e6 / (double)(fq_res[r].acked ? fq_res[r].acked : 1);
      double c1 = cpu_seconds(cpid);
      cv_res[r] = run_load_c(ctx, curve_ep, count, 0, (uint64_t)r + 1, 0, 1);
      cv_rates[r] = cv_res[r].rate;
      cpu_curve[r] =
          (cpu_seconds(cpid) - c1) * 1e6 / (double)(cv_res[r].acked ? cv_res[r].acked : 1);
      cv_ratio[r] = fq_res[r].rate > 0 ? cv_res[r].rate / fq_res[r].rate : 0;
      cpu_ratio[r] = cpu_plain[r] > 0 ? cpu_curve[r] / cpu_plain[r] : 0;
      printf("round %d: plaintext %.0f acks/s (%.1f us CPU/ack, p99 %.2f ms) | CURVE %.0f acks/s "
             "(%.1f us CPU/ack, p99 %.2f ms, errors %ld) | CURVE/plaintext %.2f, CPU %.2fx\n",
             r + 1, fq_res[r].rate, cpu_plain[r], fq_res[r].p99, cv_res[r].rate, cpu_curve[r],
             cv_res[r].p99, cv_res[r].errors, cv_ratio[r], cpu_ratio[r]);
    }
    result_t z = run_load(ctx, echo_ep, count, 0, 1000 + (uint64_t)r, 1);
    zmq_rates[r] = z.rate;
    char ldir[64];
    snprintf(ldir, sizeof ldir, "%s-lmdb", data);
    /* Batches of 1000 records of 600 bytes: fleetqd writes a ~600-byte
     * command record plus smaller index entries and an event per submit. */
    lmdb_rates[r] = lmdb_ceiling(ldir, count * producers, 1000, 600);
    printf("round %d: fleetq %.0f acks/s (p50 %.2f p99 %.2f p99.9 %.2f ms, errors %ld) | "
           "zmq echo %.0f msg/s | lmdb %.0f puts/s\n",
           r + 1, fq_res[r].rate, fq_res[r].p50, fq_res[r].p99, fq_res[r].p999, fq_res[r].errors,
           z.rate, lmdb_rates[r]);
    fflush(stdout);
  }
  double fq_med = median(fq_rates, rounds), z_med = median(zmq_rates, rounds),
         l_med = median(lmdb_rates, rounds);
  result_t best = fq_res[0];
  for (int r = 0; r < rounds; r++)
    if (fq_res[r].rate == fq_med) best = fq_res[r];

  /* Latency at half the measured maximum, open loop. */
  double half = fixed_rate > 0 ? fixed_rate : fq_med / 2;
  long half_n = (long)(half * 5 / producers); /* about 5 seconds */
  result_t h = run_load(ctx, endpoint, half_n, half, 100, 0);
  printf("open loop: offered %.0f/s achieved %.0f acks/s, p50 %.2f p99 %.2f p99.9 %.2f max %.2f ms,"
         " errors %ld\n",
         half, h.rate, h.p50, h.p99, h.p999, h.max, h.errors);
  printf("median: fleetq %.0f acks/s | zmq ceiling %.0f msg/s (ratio %.2f) | lmdb ceiling %.0f "
         "puts/s (ratio %.2f)\n",
         fq_med, z_med, fq_med / z_med, l_med, fq_med / l_med);

  double cv_med = 0, cvr_med = 0, cpp_med = 0, cpc_med = 0, cpr_med = 0;
  if (use_curve) {
    cv_med = median(cv_rates, rounds);
    cvr_med = median(cv_ratio, rounds);
    cpp_med = median(cpu_plain, rounds);
    cpc_med = median(cpu_curve, rounds);
    cpr_med = median(cpu_ratio, rounds);
    printf("CURVE: median %.0f acks/s vs plaintext %.0f; median of per-round ratios %.2f "
           "(goal >= 0.70); CPU per ack %.1f vs %.1f us (ratio %.2f)\n",
           cv_med, fq_med, cvr_med, cpc_med, cpp_med, cpr_med);
  }

  echo_stop = 1;
  pthread_join(echo_th, NULL);
  zmq_close(echo);
  if (pid > 0) {
    int st;
    kill(pid, SIGTERM);
    waitpid(pid, &st, 0);
  }
  if (cpid > 0) {
    int st;
    kill(cpid, SIGTERM);
    waitpid(cpid, &st, 0);
  }
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", data);
  if (system(cmd)) {
  }
  zmq_ctx_term(ctx);

  FILE *f = fopen(out_path, "w");
  if (f) {
    struct utsname u;
    uname(&u);
    time_t now = time(NULL);
    char date[64];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    int maj, min, pat;
    zmq_version(&maj, &min, &pat);
    fprintf(f, "# Durable ingest benchmark\n\n");
    fprintf(f, "Date: %s. Machine: %s %s, %ld CPUs. libzmq %d.%d.%d, %s.\n\n", date, u.sysname,
            u.machine, sysconf(_SC_NPROCESSORS_ONLN), maj, min, pat, MDB_VERSION_STRING);
    fprintf(f, "Workload: %d DEALER producers, each pipelining up to %d submits "
               "(set_charge_limit, unique keys, %d devices), %ld submits each per round, %d "
               "rounds; fsync on, dedupe on. Message size %zu bytes.\n\n",
            producers, window, devices, count, rounds, msg_size);
    fprintf(f, "| measure | median of %d rounds |\n|---|---|\n", rounds);
    fprintf(f, "| fleetq durable acks/s | %.0f |\n", fq_med);
    fprintf(f, "| ack latency at max (p50 / p99 / p99.9 ms) | %.2f / %.2f / %.2f |\n", best.p50,
            best.p99, best.p999);
    fprintf(f, "| ZeroMQ DEALER/ROUTER echo ceiling, msg/s | %.0f |\n", z_med);
    fprintf(f, "| LMDB batched puts + fsync ceiling (batch 1000, 600 B), puts/s | %.0f |\n", l_med);
    fprintf(f, "| fleetq / ZeroMQ ceiling | %.2f |\n", fq_med / z_med);
    fprintf(f, "| fleetq / LMDB ceiling | %.2f |\n", fq_med / l_med);
    fprintf(f, "| open loop at %.0f/s offered: achieved acks/s | %.0f |\n", half, h.rate);
    fprintf(f, "| open-loop ack latency p50 / p99 / p99.9 / max ms | %.2f / %.2f / %.2f / %.2f |\n",
            h.p50, h.p99, h.p999, h.max);
    if (use_curve) {
      fprintf(f, "\n## CURVE (the same load, same rounds, a second fleetqd with CURVE on)\n\n");
      fprintf(f, "| round | plaintext acks/s | CURVE acks/s | ratio | plaintext CPU us/ack | "
                 "CURVE CPU us/ack | CPU ratio |\n|---|---|---|---|---|---|---|\n");
      for (int r = 0; r < rounds; r++)
        fprintf(f, "| %d | %.0f | %.0f | %.2f | %.1f | %.1f | %.2f |\n", r + 1, fq_rates[r],
                cv_rates[r], cv_ratio[r], cpu_plain[r], cpu_curve[r], cpu_ratio[r]);
      fprintf(f, "| median | %.0f | %.0f | %.2f | %.1f | %.1f | %.2f |\n\n", fq_med, cv_med,
              cvr_med, cpp_med, cpc_med, cpr_med);
      fprintf(f, "Goal: CURVE at least 0.70x of plaintext throughput (median of per-round "
                 "ratios %.2f).\n",
              cvr_med);
    }
    fclose(f);
    printf("wrote %s\n", out_path);
  }
  return 0;
}
