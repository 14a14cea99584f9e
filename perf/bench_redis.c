/*
 * bench_redis: the same durable, deduplicated ingest workload as
 * bench_ingest, against Redis: each submit runs perf/redis_dedupe.lua
 * (SET NX on the idempotency key + XADD to the device's stream) through
 * EVALSHA.  Run it against a redis-server with appendonly yes and
 * appendfsync always (perf/run-all.sh starts one), so that a reply means
 * the command is on disk, as a fleetq ack does.
 *
 * Same shape as bench_ingest: N producer connections, each pipelining up
 * to W requests (closed loop), set_charge_limit on one of D devices with a
 * unique key, R rounds, median reported; then an open-loop run at half the
 * measured rate for latency from the intended send time.
 *
 * usage: bench_redis --port P --script FILE [--producers N] [--window W]
 *                    [--count N per producer] [--devices D] [--rounds R]
 *                    [--rate R --seconds S]
 * --rate: only an open-loop run at R requests/s for S seconds (the
 * latency-versus-load curve of perf/run-all.sh, at fleetq's rates).
 * The last line is "RESULT key=value ..." for scripts.
 */
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

static int producers = 4, window = 256, devices = 10000, rounds = 3, port = 6379;
static long count = 100000;
static char sha[64];

typedef struct job {
  int id;
  long n;
  uint64_t run;
  double rate;     /* per producer per second; 0 = closed loop with `window` */
  int64_t *lat_ns; /* n entries */
  long acked, errors;
  int failed;
} job_t;

static const char vinchars[] = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789";

/* Append one EVALSHA: the same request content as bench_ingest's submit. */
static void append_submit(redisContext *c, uint64_t run, int producer, long i, uint32_t *rng) {
  *rng = *rng * 1664525u + 1013904223u;
  unsigned dev = (*rng >> 8) % (unsigned)devices;
  char vin[18], key[64], idem[96], stream[32], params[16], ttl[8] = "60000";
  snprintf(vin, sizeof vin, "5YJ3E1EA%09u", dev);
  for (int k = 8; k < 17; k++) vin[k] = vinchars[(vin[k] - '0' + k) % 33];
  snprintf(key, sizeof key, "bench-%" PRIu64 "-%d-%ld", run, producer, i);
  snprintf(idem, sizeof idem, "idem:bench:%s", key);
  snprintf(stream, sizeof stream, "dev:%s", vin);
  /* params as msgpack: {"percent": 50..100} */
  size_t pl = 0;
  params[pl++] = (char)0x81;
  params[pl++] = (char)0xa7;
  memcpy(params + pl, "percent", 7);
  pl += 7;
  params[pl++] = (char)(50 + (int)(i % 51));
  const char *argv[] = {"EVALSHA", sha,   "2",    idem,    stream, "bench",
                        key,       "acct-1", vin, "set_charge_limit", params, ttl};
  size_t lens[12];
  for (int k = 0; k < 12; k++) lens[k] = strlen(argv[k]);
  lens[10] = pl;
  redisAppendCommandArgv(c, 12, argv, lens);
}

static void *producer_main(void *arg) {
  job_t *j = arg;
  redisContext *c = redisConnect("127.0.0.1", port);
  if (!c || c->err) {
    fprintf(stderr, "bench_redis: connect: %s\n", c ? c->errstr : "out of memory");
    j->failed = 1;
    if (c) redisFree(c);
    return NULL;
  }
  int64_t *sent_at = calloc((size_t)j->n, sizeof *sent_at);
  uint32_t rng = 12345u + (uint32_t)j->id * 7919u;
  long next = 0, done = 0;
  int64_t t0 = fq_mono_ns();
  int64_t deadline = t0 + 120LL * 1000000000LL;
  while (done < j->n && fq_mono_ns() < deadline) {
    int64_t now = fq_mono_ns();
    while (next < j->n) {
      int64_t due = j->rate > 0 ? t0 + (int64_t)((double)next * 1e9 / j->rate) : now;
      if (j->rate > 0 ? due > now : next - done >= window) break;
      append_submit(c, j->run, j->id, next, &rng);
      sent_at[next] = due;
      next++;
    }
    if (next == done) {
      /* Open loop and nothing due yet: sleep until the next one is. */
      int64_t due = t0 + (int64_t)((double)next * 1e9 / j->rate);
      int64_t wait = due - fq_mono_ns();
      if (wait > 0) {
        struct timespec ts = {(time_t)(wait / 1000000000LL), (long)(wait % 1000000000LL)};
        nanosleep(&ts, NULL);
      }
      continue;
    }
    redisReply *r = NULL;
    /* One connection answers in order: the reply is for `done`. */
    if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) {
      fprintf(stderr, "bench_redis: %s\n", c->errstr);
      j->failed = 1;
      break;
    }
    j->lat_ns[j->acked + j->errors] = fq_mono_ns() - sent_at[done];
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
      j->acked++;
    } else {
      if (j->errors == 0 && r->type == REDIS_REPLY_ERROR)
        fprintf(stderr, "bench_redis: error reply: %s\n", r->str);
      j->errors++;
    }
    freeReplyObject(r);
    done++;
  }
  free(sent_at);
  redisFree(c);
  return NULL;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

typedef struct result {
  double rate, p50, p90, p99, p999, max;
  long acked, errors;
  int failed;
} result_t;

static result_t run_load(long per_producer, double total_rate, uint64_t run) {
  job_t jobs[64];
  pthread_t th[64];
  int64_t *all = calloc((size_t)per_producer * (size_t)producers, sizeof *all);
  int64_t t0 = fq_mono_ns();
  for (int i = 0; i < producers; i++) {
    jobs[i] = (job_t){.id = i, .n = per_producer, .run = run,
                      .rate = total_rate > 0 ? total_rate / producers : 0,
                      .lat_ns = calloc((size_t)per_producer, sizeof(int64_t))};
    pthread_create(&th[i], NULL, producer_main, &jobs[i]);
  }
  result_t r = {0};
  size_t n = 0;
  for (int i = 0; i < producers; i++) {
    pthread_join(th[i], NULL);
    r.acked += jobs[i].acked;
    r.errors += jobs[i].errors;
    r.failed |= jobs[i].failed;
    memcpy(all + n, jobs[i].lat_ns, (size_t)(jobs[i].acked + jobs[i].errors) * sizeof *all);
    n += (size_t)(jobs[i].acked + jobs[i].errors);
    free(jobs[i].lat_ns);
  }
  double secs = (double)(fq_mono_ns() - t0) / 1e9;
  qsort(all, n, sizeof *all, cmp_i64);
  r.rate = (double)r.acked / secs;
  if (n) {
    r.p50 = (double)all[n / 2] / 1e6;
    r.p90 = (double)all[(size_t)((double)n * 0.9)] / 1e6;
    r.p99 = (double)all[(size_t)((double)n * 0.99)] / 1e6;
    r.p999 = (double)all[(size_t)((double)n * 0.999)] / 1e6;
    r.max = (double)all[n - 1] / 1e6;
  }
  free(all);
  return r;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  const char *script = NULL;
  double only_rate = 0, only_secs = 5;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--port") && i + 1 < argc) port = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--script") && i + 1 < argc) script = argv[++i];
    else if (!strcmp(argv[i], "--producers") && i + 1 < argc) producers = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--count") && i + 1 < argc) count = atol(argv[++i]);
    else if (!strcmp(argv[i], "--window") && i + 1 < argc) window = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--devices") && i + 1 < argc) devices = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--rate") && i + 1 < argc) only_rate = atof(argv[++i]);
    else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) only_secs = atof(argv[++i]);
    else {
      fprintf(stderr, "usage: bench_redis --port P --script FILE [--producers N] [--window W]\n"
                      "                   [--count N per producer] [--devices D] [--rounds R]\n"
                      "                   [--rate R --seconds S (open loop only)]\n");
      return 2;
    }
  }
  if (!script || producers < 1 || producers > 64 || rounds < 1 || rounds > 15 || count < 1 ||
      window < 1 || devices < 1 || port < 1 || port > 65535 || only_rate < 0 ||
      only_secs <= 0 || only_secs > 600) {
    fprintf(stderr, "bench_redis: bad arguments (--script is required)\n");
    return 2;
  }
  char *lua = NULL;
  size_t lualen = 0;
  if (fq_read_file(script, 64 * 1024, &lua, &lualen)) {
    fprintf(stderr, "bench_redis: cannot read %s\n", script);
    return 1;
  }
  redisContext *c = redisConnect("127.0.0.1", port);
  if (!c || c->err) {
    fprintf(stderr, "bench_redis: cannot connect to 127.0.0.1:%d\n", port);
    return 1;
  }
  redisReply *r = redisCommand(c, "SCRIPT LOAD %b", lua, lualen);
  if (!r || r->type != REDIS_REPLY_STRING) {
    fprintf(stderr, "bench_redis: SCRIPT LOAD failed: %s\n", r && r->str ? r->str : c->errstr);
    return 1;
  }
  snprintf(sha, sizeof sha, "%s", r->str);
  freeReplyObject(r);
  /* Check the durability settings the comparison depends on. */
  const char *want[][2] = {{"appendonly", "yes"}, {"appendfsync", "always"}};
  for (int k = 0; k < 2; k++) {
    r = redisCommand(c, "CONFIG GET %s", want[k][0]);
    int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
             !strcmp(r->element[1]->str, want[k][1]);
    if (!ok) fprintf(stderr, "bench_redis: warning: %s is not %s\n", want[k][0], want[k][1]);
    if (r) freeReplyObject(r);
  }
  /* The dedupe works: the same key twice is a duplicate. */
  r = redisCommand(c, "EVALSHA %s 2 idem:bench:probe dev:probe bench probe a v c p 1", sha);
  redisReply *r2 = redisCommand(c, "EVALSHA %s 2 idem:bench:probe dev:probe bench probe a v c p 1", sha);
  if (!r || !r2 || r2->type != REDIS_REPLY_ARRAY || r2->element[0]->integer != 1) {
    fprintf(stderr, "bench_redis: the dedupe script does not dedupe\n");
    return 1;
  }
  freeReplyObject(r);
  freeReplyObject(r2);
  redisFree(c);
  free(lua);

  if (only_rate > 0) {
    /* One point of the latency-versus-load curve; a run id of its own per
     * rate keeps every key new. */
    long n = (long)(only_rate * only_secs / producers);
    if (n < 1) n = 1;
    result_t o = run_load(n, only_rate, 200 + (uint64_t)only_rate);
    printf("OPENLOOP offered=%.0f rate=%.0f p50=%.3f p90=%.3f p99=%.3f p999=%.3f max=%.3f "
           "acked=%ld errors=%ld\n",
           only_rate, o.rate, o.p50, o.p90, o.p99, o.p999, o.max, o.acked, o.errors);
    return o.failed ? 1 : 0;
  }
  printf("bench_redis: %d producers x %ld submits, window %d, %d devices, %d rounds\n", producers,
         count, window, devices, rounds);
  double rates[15];
  result_t res[15];
  for (int k = 0; k < rounds; k++) {
    res[k] = run_load(count, 0, (uint64_t)k + 1);
    rates[k] = res[k].rate;
    printf("round %d: redis %.0f acks/s (p50 %.2f p99 %.2f p99.9 %.2f ms, errors %ld)\n", k + 1,
           res[k].rate, res[k].p50, res[k].p99, res[k].p999, res[k].errors);
    fflush(stdout);
    if (res[k].failed) return 1;
  }
  double sorted[15];
  memcpy(sorted, rates, sizeof rates);
  qsort(sorted, (size_t)rounds, sizeof *sorted, cmp_d);
  double med = sorted[rounds / 2];
  result_t best = res[0];
  for (int k = 0; k < rounds; k++)
    if (res[k].rate == med) best = res[k];
  double half = med / 2;
  long half_n = (long)(half * 5 / producers);
  if (half_n < 1) half_n = 1;
  result_t h = run_load(half_n, half, 100);
  printf("half load: offered %.0f/s achieved %.0f acks/s, p50 %.2f p99 %.2f p99.9 %.2f max %.2f "
         "ms, errors %ld\n",
         half, h.rate, h.p50, h.p99, h.p999, h.max, h.errors);
  printf("RESULT rate=%.0f p50=%.3f p99=%.3f p999=%.3f errors=%ld half_rate=%.0f half_p50=%.3f "
         "half_p99=%.3f half_p999=%.3f half_max=%.3f\n",
         med, best.p50, best.p99, best.p999, best.errors, h.rate, h.p50, h.p99, h.p999, h.max);
  return 0;
}
