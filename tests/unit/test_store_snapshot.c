/*
 * Unit tests of the dedupe snapshot (store.c, "The dedupe snapshot"): a
 * store reopened after fq_store_save_snapshot takes its dedupe table from
 * it, with every key; a snapshot is never used for another store state:
 * after a write since (a run killed without a clean stop), for another
 * store of the same shape, when damaged or truncated; a start with a
 * longer dedupe window than the one that dropped keys from the saved table
 * rebuilds it from the log.  And fq_idem_load_sorted against puts.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fq_test.h"
#include "idem.h"
#include "store.h"
#include "util.h"

static char *tmpdir(char *path, size_t n) {
  snprintf(path, n, "/tmp/fq_snap_XXXXXX");
  return mkdtemp(path);
}

static void rm_rf(const char *dir) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
}

static void snap_file(const char *dir, char *buf, size_t n) {
  snprintf(buf, n, "%s/%s", dir, FQ_STORE_SNAP_NAME);
}

static bool exists(const char *p) { return access(p, F_OK) == 0; }

static void copy_file(const char *from, const char *to) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
  CHECK_INT(system(cmd), 0);
}

/* n queued commands of tenant "acme", keys prefix0..prefix(n-1), created
 * at `created`, committed; their ids in ids (n x FQ_ID_LEN+1). */
static void add_cmds(fq_store_t *s, const char *prefix, int n, int64_t created, char *ids) {
  fq_err_t err;
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  for (int i = 0; i < n; i++) {
    fq_cmdrec_t r;
    memset(&r, 0, sizeof r);
    fq_store_new_id(s, r.id, &r.qseq);
    snprintf(r.tenant, sizeof r.tenant, "acme");
    snprintf(r.key, sizeof r.key, "%s%d", prefix, i);
    snprintf(r.account, sizeof r.account, "acct");
    snprintf(r.vin, sizeof r.vin, "5YJ30123456789ABC");
    snprintf(r.device, sizeof r.device, "v:5YJ30123456789ABC");
    snprintf(r.command, sizeof r.command, "door_lock");
    r.fault = -1;
    r.created = r.updated = created;
    r.deadline = created + 3600000;
    r.ttl_ms = 3600000;
    r.state = FQ_ST_QUEUED;
    r.trans[r.ntrans++] = (fq_transition_t){FQ_ST_QUEUED, created};
    CHECK_INT(fq_store_idem_put(s, &r, &err), 0);
    CHECK_INT(fq_store_cmd_put(s, &r, &err), 0);
    CHECK_INT(fq_store_active_put(s, &r, &err), 0);
    memcpy(ids + (size_t)i * (FQ_ID_LEN + 1), r.id, FQ_ID_LEN + 1);
  }
  CHECK_INT(fq_store_commit(s, &err), 0);
}

/* How many of the n keys dedupe to their command's id. */
static int deduped(fq_store_t *s, const char *prefix, int n, const char *ids) {
  fq_err_t err;
  int ok = 0;
  CHECK_INT(fq_store_begin(s, false, &err), 0);
  for (int i = 0; i < n; i++) {
    char key[32], id[FQ_ID_LEN + 1];
    uint8_t h[32];
    snprintf(key, sizeof key, "%s%d", prefix, i);
    int rc = fq_store_idem_get(s, "acme", 4, key, strlen(key), h, id, &err);
    if (rc == 0 && strcmp(id, ids + (size_t)i * (FQ_ID_LEN + 1)) == 0) ok++;
  }
  fq_store_abort(s);
  return ok;
}

static fq_store_t *reopen(const char *dir) {
  fq_err_t err;
  fq_store_t *s = fq_store_open(dir, 0, 64 << 20, &err);
  CHECK(s != NULL);
  return s;
}

#define N 5000 /* more pairs than the writer's buffer holds */

FQ_TEST(snapshot_used_after_a_clean_stop_with_every_key) {
  char dir[64], snap[128];
  static char ids[N * (FQ_ID_LEN + 1)];
  fq_err_t err;
  CHECK(tmpdir(dir, sizeof dir) != NULL);
  snap_file(dir, snap, sizeof snap);
  fq_store_t *s = reopen(dir);
  if (!s) return;
  CHECK(!fq_store_from_snapshot(s));
  add_cmds(s, "k", N, fq_now_ms(), ids);
  CHECK_INT(fq_store_save_snapshot(s, NULL, 0, &err), 0);
  fq_store_destroy(&s);
  struct stat st;
  CHECK_INT(stat(snap, &st), 0);
  CHECK_INT(st.st_mode & 0777, 0600);
  s = reopen(dir);
  if (!s) return;
  CHECK(fq_store_from_snapshot(s));
  CHECK(!exists(snap)); /* read once */
  CHECK_INT(fq_store_idem_count(s), N);
  CHECK_INT(deduped(s, "k", N, ids), N);
  CHECK_INT(deduped(s, "x", 1, ids), 0); /* an unknown key stays unknown */
  /* Closed without a clean stop: the next open rebuilds, with every key. */
  fq_store_destroy(&s);
  s = reopen(dir);
  if (!s) return;
  CHECK(!fq_store_from_snapshot(s));
  CHECK_INT(deduped(s, "k", N, ids), N);
  fq_store_destroy(&s);
  rm_rf(dir);
}

FQ_TEST(snapshot_stale_after_a_write_is_ignored) {
  char dir[64], snap[128], kept[160];
  static char ids[N * (FQ_ID_LEN + 1)], later[500 * (FQ_ID_LEN + 1)];
  fq_err_t err;
  CHECK(tmpdir(dir, sizeof dir) != NULL);
  snap_file(dir, snap, sizeof snap);
  snprintf(kept, sizeof kept, "%s/kept", dir);
  fq_store_t *s = reopen(dir);
  if (!s) return;
  add_cmds(s, "k", N, fq_now_ms(), ids);
  CHECK_INT(fq_store_save_snapshot(s, NULL, 0, &err), 0);
  fq_store_destroy(&s);
  copy_file(snap, kept);
  /* A run that writes and dies (no snapshot of its own), then the old
   * snapshot back in place. */
  s = reopen(dir);
  if (!s) return;
  CHECK(fq_store_from_snapshot(s));
  add_cmds(s, "w", 500, fq_now_ms(), later);
  fq_store_destroy(&s);
  CHECK(!exists(snap));
  copy_file(kept, snap);
  s = reopen(dir);
  if (!s) return;
  CHECK(!fq_store_from_snapshot(s));
  CHECK(!exists(snap));
  CHECK_INT(deduped(s, "w", 500, later), 500);
  CHECK_INT(deduped(s, "k", N, ids), N);
  fq_store_destroy(&s);
  rm_rf(dir);
}

FQ_TEST(snapshot_of_another_store_is_ignored) {
  /* Two stores written alike (same count, same transactions: the same
   * LMDB transaction id and shape) but with other keys: only the random
   * store identity tells them apart. */
  char a[64], b[64], snap_a[128], snap_b[128];
  static char ids_a[N * (FQ_ID_LEN + 1)], ids_b[N * (FQ_ID_LEN + 1)];
  fq_err_t err;
  CHECK(tmpdir(a, sizeof a) != NULL);
  CHECK(tmpdir(b, sizeof b) != NULL);
  snap_file(a, snap_a, sizeof snap_a);
  snap_file(b, snap_b, sizeof snap_b);
  int64_t now = fq_now_ms();
  fq_store_t *s = reopen(a);
  if (!s) return;
  add_cmds(s, "a", N, now, ids_a);
  CHECK_INT(fq_store_save_snapshot(s, NULL, 0, &err), 0);
  fq_store_destroy(&s);
  s = reopen(b);
  if (!s) return;
  add_cmds(s, "b", N, now, ids_b);
  fq_store_destroy(&s);
  copy_file(snap_a, snap_b);
  s = reopen(b);
  if (!s) return;
  CHECK(!fq_store_from_snapshot(s));
  CHECK_INT(deduped(s, "b", N, ids_b), N);
  fq_store_destroy(&s);
  rm_rf(a);
  rm_rf(b);
}

FQ_TEST(snapshot_damaged_or_truncated_is_ignored) {
  char dir[64], snap[128];
  static char ids[N * (FQ_ID_LEN + 1)];
  fq_err_t err;
  CHECK(tmpdir(dir, sizeof dir) != NULL);
  snap_file(dir, snap, sizeof snap);
  fq_store_t *s = reopen(dir);
  if (!s) return;
  add_cmds(s, "k", N, fq_now_ms(), ids);
  fq_store_destroy(&s);
  for (int round = 0; round < 3; round++) {
    s = reopen(dir);
    if (!s) return;
    CHECK_INT(fq_store_save_snapshot(s, NULL, 0, &err), 0);
    fq_store_destroy(&s);
    struct stat st;
    CHECK_INT(stat(snap, &st), 0);
    if (round < 2) {
      /* One bit of a pair (round 0), of the header's count (round 1). */
      FILE *f = fopen(snap, "r+b");
      CHECK(f != NULL);
      if (!f) return;
      long off = round == 0 ? (long)st.st_size / 2 : 88;
      fseek(f, off, SEEK_SET);
      int c = fgetc(f);
      fseek(f, off, SEEK_SET);
      fputc(c ^ 0x01, f);
      fclose(f);
    } else {
      CHECK_INT(truncate(snap, st.st_size - 16), 0);
    }
    s = reopen(dir);
    if (!s) return;
    CHECK(!fq_store_from_snapshot(s));
    CHECK(!exists(snap));
    CHECK_INT(deduped(s, "k", N, ids), N);
    fq_store_destroy(&s);
  }
  rm_rf(dir);
}

FQ_TEST(snapshot_with_keys_a_shorter_window_dropped_is_rebuilt_for_a_longer_one) {
  char dir[64];
  static char old_ids[100 * (FQ_ID_LEN + 1)], new_ids[100 * (FQ_ID_LEN + 1)];
  fq_err_t err;
  size_t dropped;
  CHECK(tmpdir(dir, sizeof dir) != NULL);
  int64_t now = fq_now_ms();
  fq_store_t *s = reopen(dir);
  if (!s) return;
  add_cmds(s, "o", 100, now - 20000, old_ids); /* 20 s old */
  add_cmds(s, "n", 100, now, new_ids);
  /* A 10 s window drops the old keys from memory (their rows stay). */
  CHECK_INT(fq_store_set_dedupe_window(s, 10000, now, &dropped, &err), 0);
  CHECK_INT(dropped, 100);
  CHECK_INT(fq_store_save_snapshot(s, NULL, 0, &err), 0);
  fq_store_destroy(&s);
  /* The same window: the snapshot as it is. */
  s = reopen(dir);
  if (!s) return;
  CHECK(fq_store_from_snapshot(s));
  CHECK_INT(fq_store_idem_count(s), 100);
  CHECK_INT(fq_store_set_dedupe_window(s, 10000, now, &dropped, &err), 0);
  CHECK_INT(deduped(s, "o", 100, old_ids), 0);
  CHECK_INT(deduped(s, "n", 100, new_ids), 100);
  CHECK_INT(fq_store_save_snapshot(s, NULL, 0, &err), 0);
  fq_store_destroy(&s);
  /* A window of a minute keeps the old keys: the table is rebuilt. */
  s = reopen(dir);
  if (!s) return;
  CHECK(fq_store_from_snapshot(s));
  CHECK_INT(fq_store_set_dedupe_window(s, 60000, now, &dropped, &err), 0);
  CHECK_INT(deduped(s, "o", 100, old_ids), 100);
  CHECK_INT(deduped(s, "n", 100, new_ids), 100);
  CHECK_INT(fq_store_save_snapshot(s, NULL, 0, &err), 0);
  fq_store_destroy(&s);
  /* No window (for ever) after a snapshot that dropped nothing: as is. */
  s = reopen(dir);
  if (!s) return;
  CHECK(fq_store_from_snapshot(s));
  CHECK_INT(fq_store_set_dedupe_window(s, 0, now, &dropped, &err), 0);
  CHECK_INT(deduped(s, "o", 100, old_ids), 100);
  fq_store_destroy(&s);
  rm_rf(dir);
}

static int collect(void *ud, uint64_t h, uint64_t num) {
  uint64_t **p = ud;
  *(*p)++ = h;
  *(*p)++ = num;
  return 0;
}

FQ_TEST(idem_load_sorted_matches_puts) {
  enum { M = 50000 };
  fq_idem_t *a = fq_idem_new(0);
  uint64_t *pairs = malloc(2 * M * sizeof *pairs), *p = pairs;
  uint64_t x = 88172645463325252ull;
  for (int i = 0; i < M; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    /* Crowded hashes too: some share one. */
    CHECK_INT(fq_idem_put(a, i % 10 == 0 ? 42 : x, (uint64_t)i), 0);
  }
  CHECK_INT(fq_idem_foreach_sorted(a, collect, &p), 0);
  CHECK_INT((size_t)(p - pairs), 2 * (size_t)M);
  fq_idem_t *b = fq_idem_new(0);
  CHECK_INT(fq_idem_load_sorted(b, pairs, M, M + 1024), 0);
  CHECK_INT(fq_idem_count(b), M);
  x = 88172645463325252ull;
  int found = 0;
  for (int i = 0; i < M; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    size_t cur = 0;
    uint64_t v;
    while (fq_idem_next(b, i % 10 == 0 ? 42 : x, &cur, &v))
      if (v == (uint64_t)i) {
        found++;
        break;
      }
  }
  CHECK_INT(found, M);
  /* It keeps working as a table: puts and deletes after the load. */
  CHECK_INT(fq_idem_put(b, 7, 7), 0);
  fq_idem_del(b, 42, 0);
  CHECK_INT(fq_idem_count(b), M);
  /* Out of order or a zero hash: refused, nothing loaded. */
  fq_idem_t *c = fq_idem_new(0);
  uint64_t tmp = pairs[0];
  pairs[0] = pairs[2 * M - 2];
  CHECK_INT(fq_idem_load_sorted(c, pairs, M, 0), -EINVAL);
  pairs[0] = 0;
  CHECK_INT(fq_idem_load_sorted(c, pairs, M, 0), -EINVAL);
  pairs[0] = tmp;
  CHECK_INT(fq_idem_count(c), 0);
  /* Not into a table that holds entries. */
  CHECK_INT(fq_idem_load_sorted(b, pairs, M, 0), -EINVAL);
  fq_idem_destroy(&a);
  fq_idem_destroy(&b);
  fq_idem_destroy(&c);
  free(pairs);
}


FQ_TEST(snapshot_carries_the_callers_words) {
  char dir[64];
  static char ids[N * (FQ_ID_LEN + 1)];
  fq_err_t err;
  CHECK(tmpdir(dir, sizeof dir) != NULL);
  fq_store_t *s = reopen(dir);
  if (!s) return;
  add_cmds(s, "k", N, fq_now_ms(), ids);
  /* An odd number of words, after an odd-sized header. */
  uint64_t extra[3] = {7, UINT64_MAX, 42};
  CHECK_INT(fq_store_save_snapshot(s, extra, sizeof extra, &err), 0);
  CHECK(fq_store_save_snapshot(s, extra, 5, &err) != 0); /* not whole words */
  CHECK_INT(fq_store_save_snapshot(s, extra, sizeof extra, &err), 0);
  fq_store_destroy(&s);
  s = reopen(dir);
  if (!s) return;
  CHECK(fq_store_from_snapshot(s));
  size_t n = 0;
  const uint64_t *w = fq_store_snapshot_extra(s, &n);
  CHECK_INT(n, 3);
  CHECK(w != NULL && memcmp(w, extra, sizeof extra) == 0);
  fq_store_snapshot_release(s);
  CHECK(fq_store_snapshot_extra(s, &n) == NULL);
  CHECK_INT(deduped(s, "k", N, ids), N);
  fq_store_destroy(&s);
  rm_rf(dir);
}
