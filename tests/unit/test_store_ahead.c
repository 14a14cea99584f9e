/*
 * The shard store's writer that keeps data.mdb written ahead of LMDB's
 * last page (src/daemon/store.c, "Writing the file ahead"; issue 17): a
 * test of its own, so that test_store keeps its time.
 */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fq_test.h"
#include "store.h"
#include "util.h"

static void fill(fq_cmdrec_t *r, fq_store_t *s, const char *key) {
  memset(r, 0, sizeof *r);
  fq_store_new_id(s, r->id, &r->qseq);
  snprintf(r->tenant, sizeof r->tenant, "acme");
  snprintf(r->key, sizeof r->key, "%s", key);
  snprintf(r->account, sizeof r->account, "acct");
  snprintf(r->vin, sizeof r->vin, "5YJ30123456789ABC");
  snprintf(r->device, sizeof r->device, "v:AAA");
  snprintf(r->command, sizeof r->command, "door_lock");
  r->state = FQ_ST_QUEUED;
  r->fault = -1;
  r->deadline = 5000;
  r->created = r->updated = 1000;
  r->ttl_ms = 60000;
  r->ntrans = 1;
  r->trans[0].state = FQ_ST_QUEUED;
  r->trans[0].at = 1000;
}

/* The writer that keeps data.mdb written ahead of LMDB's last page (issue
 * 17): nothing while the store is small; past 16 MiB, while records are
 * committed in many small transactions, the file stays ahead of the pages
 * in use (so LMDB's commits overwrite blocks the
 * file has, without growing it), only within the disk reserve, and no
 * committed record is ever overwritten by its zeros: every one reads back
 * after the store is closed and opened again. */
FQ_TEST(data_file_written_ahead_never_over_records) {
  char dir[64];
  snprintf(dir, sizeof dir, "/tmp/fq_ahead_XXXXXX");
  CHECK(mkdtemp(dir) != NULL);
  fq_err_t err;
  fq_store_t *s = fq_store_open(dir, 0, 64 << 20, &err);
  CHECK(s != NULL);
  if (!s) return;
  char path[128];
  snprintf(path, sizeof path, "%s/data.mdb", dir);
  /* Nothing is reserved yet: nothing is written ahead. */
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  CHECK_INT(fq_store_commit(s, &err), 0);
  struct stat st;
  CHECK_INT(stat(path, &st), 0);
  uint64_t size0 = (uint64_t)st.st_size;
  CHECK(size0 < (1u << 20));
  CHECK_INT(fq_store_reserve_disk(s, 48 << 20, &err), 0);
  /* Past ZERO_FROM (16 MiB): 2000 records of about 12 KB. */
  enum { N = 2000, PER = 20 };
  static char ids[N][FQ_ID_LEN + 1];
  static uint8_t big[12000];
  memset(big, 0xa5, sizeof big);
  bool ahead_seen = false;
  for (int i = 0; i < N; i += PER) {
    CHECK_INT(fq_store_begin(s, true, &err), 0);
    for (int j = i; j < i + PER; j++) {
      fq_cmdrec_t r;
      char key[32];
      snprintf(key, sizeof key, "k%d", j);
      fill(&r, s, key);
      r.params = big; /* the store grows fast */
      r.params_len = sizeof big;
      memcpy(ids[j], r.id, sizeof ids[j]);
      CHECK_INT(fq_store_cmd_put(s, &r, &err), 0);
    }
    CHECK_INT(fq_store_commit(s, &err), 0);
    usleep(200); /* give the writer a chance to run between commits */
    fq_store_stats_t u; /* map_used: where LMDB's last page ends */
    CHECK_INT(fq_store_begin(s, false, &err), 0);
    CHECK_INT(fq_store_stats(s, &u, &err), 0);
    fq_store_abort(s);
    CHECK_INT(stat(path, &st), 0);
    if ((uint64_t)st.st_size >= u.map_used + (1u << 20)) ahead_seen = true;
    /* A small store is left as LMDB writes it. */
    if (u.map_used < (12u << 20)) CHECK((uint64_t)st.st_size == u.map_used);
    CHECK((uint64_t)st.st_size <= (48u << 20)); /* never past the reserve */
  }
  CHECK(ahead_seen);
  fq_store_destroy(&s);
  s = fq_store_open(dir, 0, 64 << 20, &err);
  CHECK(s != NULL);
  if (!s) return;
  CHECK_INT(fq_store_begin(s, false, &err), 0);
  int bad = 0;
  for (int j = 0; j < N; j++) {
    fq_cmdrec_t got;
    if (fq_store_cmd_get(s, ids[j], FQ_ID_LEN, &got, &err) != 0) {
      bad++;
      continue;
    }
    char key[32];
    snprintf(key, sizeof key, "k%d", j);
    if (strcmp(got.key, key) != 0 || got.params_len != sizeof big ||
        memcmp(got.params, big, sizeof big) != 0)
      bad++;
    fq_cmdrec_free(&got);
  }
  CHECK_INT(bad, 0);
  fq_store_abort(s);
  fq_store_destroy(&s);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
}
