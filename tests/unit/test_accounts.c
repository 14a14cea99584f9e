/*
 * Unit tests of accounts.c on a real LMDB environment in a temporary data
 * directory: round trip, restart persistence, tokens absent from the data
 * file, AAD binding (a record copied under another id fails), key file
 * creation and refusal rules.
 */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "accounts.h"
#include "fleetq/commands.h"
#include "fq_test.h"
#include "util.h"

static const char *ACCESS = "ACCESS-8d1f0c2e-very-secret-token";
static const char *REFRESH = "NA_REFRESH-5b7e91aa-very-secret";

static char *tmpdir(void) {
  static char d[64];
  snprintf(d, sizeof d, "/tmp/fq-test-acct-XXXXXX");
  return mkdtemp(d);
}

static void rmrf(const char *d) {
  char cmd[200];
  snprintf(cmd, sizeof cmd, "rm -rf %s", d);
  if (system(cmd) != 0) fprintf(stderr, "  could not remove %s\n", d);
}

static fq_account_t *sample(const char *id) {
  fq_account_t *a = fq_account_new();
  snprintf(a->id, sizeof a->id, "%s", id);
  snprintf(a->client_id, sizeof a->client_id, "client-xyz");
  snprintf(a->region, sizeof a->region, "eu");
  snprintf(a->access_token, sizeof a->access_token, "%s-%s", ACCESS, id);
  snprintf(a->refresh_token, sizeof a->refresh_token, "%s-%s", REFRESH, id);
  a->access_exp = 1800000000;
  a->scopes = FQ_SCOPE_VEHICLE_CMDS;
  return a;
}

/* Does the file contain the bytes of s? */
static int file_has(const char *path, const char *s) {
  char *buf = NULL;
  size_t n = 0;
  if (fq_read_file(path, 64u << 20, &buf, &n) != 0) return -1;
  int found = memmem(buf, n, s, strlen(s)) != NULL;
  free(buf);
  return found;
}

FQ_TEST(accounts_round_trip_and_restart) {
  char *d = tmpdir();
  fq_err_t err;
  mode_t old = umask(0); /* the key file must be 0600 whatever the umask */
  fq_accounts_t *s = fq_accounts_open(d, &err);
  umask(old);
  CHECK(s != NULL);
  if (!s) {
    fprintf(stderr, "  %s\n", err.msg);
    return;
  }
  char kp[128];
  snprintf(kp, sizeof kp, "%s/token.key", d);
  struct stat st;
  CHECK_INT(lstat(kp, &st), 0);
  CHECK_INT(st.st_mode & 07777, 0600);
  CHECK_INT(st.st_size, 32);

  fq_account_t *a = sample("acct-1"), *b = fq_account_new();
  int64_t before = fq_now_ms();
  CHECK_INT(fq_accounts_put(s, a, &err), 0);
  CHECK_INT(fq_accounts_get(s, "acct-1", b, &err), 0);
  CHECK_STR(b->id, "acct-1");
  CHECK_STR(b->client_id, "client-xyz");
  CHECK_STR(b->region, "eu");
  CHECK_STR(b->base_url, "");
  CHECK_STR(b->access_token, a->access_token);
  CHECK_STR(b->refresh_token, a->refresh_token);
  CHECK_INT(b->access_exp, 1800000000);
  CHECK_INT(b->scopes, FQ_SCOPE_VEHICLE_CMDS);
  CHECK(b->updated_at_ms >= before);

  /* Refresh result and a 421 switch, then a restart. */
  CHECK_INT(fq_accounts_update_tokens(s, "acct-1", "ACCESS-2", "REFRESH-2", 1900000000,
                                      FQ_SCOPE_ENERGY_CMDS, &err), 0);
  CHECK_INT(fq_accounts_update_tokens(s, "acct-1", "ACCESS-3", NULL, 1900000001,
                                      FQ_SCOPE_ENERGY_CMDS, &err), 0);
  CHECK_INT(fq_accounts_set_base_url(s, "acct-1", "https://fleet-api.prd.na.vn.cloud.tesla.com",
                                     &err), 0);
  CHECK_INT(fq_accounts_update_tokens(s, "nobody", "A", "R", 0, 0, &err), FQ_ENOTFOUND);
  fq_accounts_destroy(&s);
  CHECK(s == NULL);

  s = fq_accounts_open(d, &err);
  CHECK(s != NULL);
  CHECK_INT(fq_accounts_get(s, "acct-1", b, &err), 0);
  CHECK_STR(b->access_token, "ACCESS-3");
  CHECK_STR(b->refresh_token, "REFRESH-2"); /* NULL kept the previous one */
  CHECK_INT(b->access_exp, 1900000001);
  CHECK_INT(b->scopes, FQ_SCOPE_ENERGY_CMDS);
  CHECK_STR(b->base_url, "https://fleet-api.prd.na.vn.cloud.tesla.com");

  fq_account_free(&b);
  CHECK(b == NULL);
  fq_account_free(&a);
  fq_accounts_destroy(&s);
  rmrf(d);
}

FQ_TEST(accounts_list_remove_and_validation) {
  char *d = tmpdir();
  fq_err_t err;
  fq_accounts_t *s = fq_accounts_open(d, &err);
  fq_account_t *a = sample("b-acct"), *c = sample("a-acct");
  CHECK_INT(fq_accounts_put(s, a, &err), 0);
  CHECK_INT(fq_accounts_put(s, c, &err), 0);
  CHECK_INT(fq_accounts_put(s, c, &err), 0); /* replace, not duplicate */
  fq_account_info_t *list = NULL;
  size_t n = 0;
  CHECK_INT(fq_accounts_list(s, &list, &n, &err), 0);
  CHECK_INT(n, 2);
  if (n == 2) {
    CHECK_STR(list[0].id, "a-acct");
    CHECK_STR(list[1].id, "b-acct");
    CHECK_STR(list[1].client_id, "client-xyz");
    CHECK_INT(list[1].access_exp, 1800000000);
  }
  free(list);
  CHECK_INT(fq_accounts_remove(s, "a-acct", &err), 0);
  CHECK_INT(fq_accounts_remove(s, "a-acct", &err), FQ_ENOTFOUND);
  CHECK_INT(fq_accounts_get(s, "a-acct", c, &err), FQ_ENOTFOUND);
  CHECK_INT(fq_accounts_list(s, &list, &n, &err), 0);
  CHECK_INT(n, 1);
  free(list);

  /* Validation. */
  fq_account_t *bad = sample("has space");
  CHECK_INT(fq_accounts_put(s, bad, &err), FQ_EBADPARAM);
  fq_account_free(&bad);
  bad = sample("ok");
  bad->region[0] = 0;
  CHECK_INT(fq_accounts_put(s, bad, &err), FQ_EBADPARAM);
  CHECK_STR(err.msg, "give a region (na, eu, cn) or a base URL");
  snprintf(bad->region, sizeof bad->region, "ap");
  CHECK_INT(fq_accounts_put(s, bad, &err), FQ_EBADPARAM);
  snprintf(bad->region, sizeof bad->region, "na");
  bad->refresh_token[0] = 0;
  CHECK_INT(fq_accounts_put(s, bad, &err), FQ_EBADPARAM);
  fq_account_free(&bad);
  fq_account_free(&a);
  fq_account_free(&c);
  fq_accounts_destroy(&s);
  rmrf(d);
}

FQ_TEST(accounts_tokens_not_in_plaintext_and_fresh_nonces) {
  char *d = tmpdir();
  fq_err_t err;
  fq_accounts_t *s = fq_accounts_open(d, &err);
  fq_account_t *a = sample("acct-x");
  CHECK_INT(fq_accounts_put(s, a, &err), 0);
  CHECK_INT(fq_accounts_put(s, a, &err), 0);
  fq_accounts_destroy(&s);
  char data[128];
  snprintf(data, sizeof data, "%s/accounts/data.mdb", d);
  /* The non-secret client id is there (so the scan works)... */
  CHECK_INT(file_has(data, "client-xyz"), 1);
  /* ...the tokens, or any long piece of them, are not. */
  CHECK_INT(file_has(data, a->access_token), 0);
  CHECK_INT(file_has(data, a->refresh_token), 0);
  CHECK_INT(file_has(data, "very-secret"), 0);

  /* Two writes of the same account: different nonces and ciphertexts. */
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  char dir[128];
  snprintf(dir, sizeof dir, "%s/accounts", d);
  CHECK_INT(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 2);
  CHECK_INT(mdb_env_open(env, dir, 0, 0600), 0);
  CHECK_INT(mdb_txn_begin(env, NULL, 0, &txn), 0);
  CHECK_INT(mdb_dbi_open(txn, "accounts", 0, &dbi), 0);
  MDB_val k = {6, "acct-x"}, v;
  CHECK_INT(mdb_get(txn, dbi, &k, &v), 0);
  uint8_t first[4096];
  size_t flen = v.mv_size < sizeof first ? v.mv_size : sizeof first;
  memcpy(first, v.mv_data, flen);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  s = fq_accounts_open(d, &err);
  CHECK_INT(fq_accounts_put(s, a, &err), 0);
  fq_accounts_destroy(&s);
  CHECK_INT(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 2);
  CHECK_INT(mdb_env_open(env, dir, 0, 0600), 0);
  CHECK_INT(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
  CHECK_INT(mdb_dbi_open(txn, "accounts", 0, &dbi), 0);
  CHECK_INT(mdb_get(txn, dbi, &k, &v), 0);
  CHECK_INT(v.mv_size, flen);
  /* Header equal up to updated_at; the tail (nonce, ciphertext) differs. */
  CHECK(memcmp((uint8_t *)v.mv_data + flen - 40, first + flen - 40, 40) != 0);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  fq_account_free(&a);
  rmrf(d);
}

FQ_TEST(accounts_record_copied_to_other_id_fails) {
  char *d = tmpdir();
  fq_err_t err;
  fq_accounts_t *s = fq_accounts_open(d, &err);
  fq_account_t *a = sample("alice"), *b = sample("mallory"), *out = fq_account_new();
  CHECK_INT(fq_accounts_put(s, a, &err), 0);
  CHECK_INT(fq_accounts_put(s, b, &err), 0);
  fq_accounts_destroy(&s);

  /* Copy alice's record bytes under mallory's key, and flip one bit of
   * alice's stored base fields. */
  char dir[128];
  snprintf(dir, sizeof dir, "%s/accounts", d);
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  CHECK_INT(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 2);
  CHECK_INT(mdb_env_open(env, dir, 0, 0600), 0);
  CHECK_INT(mdb_txn_begin(env, NULL, 0, &txn), 0);
  CHECK_INT(mdb_dbi_open(txn, "accounts", 0, &dbi), 0);
  MDB_val ka = {5, "alice"}, km = {7, "mallory"}, v;
  CHECK_INT(mdb_get(txn, dbi, &ka, &v), 0);
  uint8_t rec[4096];
  size_t n = v.mv_size;
  memcpy(rec, v.mv_data, n);
  MDB_val nv = {n, rec};
  CHECK_INT(mdb_put(txn, dbi, &km, &nv, 0), 0);
  rec[8] ^= 1; /* inside client_id: non-secret but authenticated */
  CHECK_INT(mdb_put(txn, dbi, &ka, &nv, 0), 0);
  CHECK_INT(mdb_txn_commit(txn), 0);
  mdb_env_close(env);

  s = fq_accounts_open(d, &err);
  CHECK_INT(fq_accounts_get(s, "mallory", out, &err), FQ_EVERIFY);
  CHECK(strstr(err.msg, "do not authenticate") != NULL);
  CHECK_STR(out->access_token, ""); /* nothing leaks on failure */
  CHECK_INT(fq_accounts_get(s, "alice", out, &err), FQ_EVERIFY);
  fq_accounts_destroy(&s);
  fq_account_free(&a);
  fq_account_free(&b);
  fq_account_free(&out);
  rmrf(d);
}

FQ_TEST(accounts_key_file_rules) {
  char *d = tmpdir();
  fq_err_t err;
  fq_accounts_t *s = fq_accounts_open(d, &err);
  fq_account_t *a = sample("acct"), *out = fq_account_new();
  CHECK_INT(fq_accounts_put(s, a, &err), 0);
  fq_accounts_destroy(&s);
  char kp[128], kp2[128];
  snprintf(kp, sizeof kp, "%s/token.key", d);
  snprintf(kp2, sizeof kp2, "%s/real.key", d);

  /* Readable by group: refused with a clear message. */
  CHECK_INT(chmod(kp, 0640), 0);
  CHECK(fq_accounts_open(d, &err) == NULL);
  CHECK_INT(err.code, FQ_EKEYFILE);
  CHECK(strstr(err.msg, "chmod 600") != NULL);
  CHECK_INT(chmod(kp, 0604), 0);
  CHECK(fq_accounts_open(d, &err) == NULL);
  CHECK_INT(chmod(kp, 0600), 0);

  /* A symlink to a good file: refused. */
  CHECK_INT(rename(kp, kp2), 0);
  CHECK_INT(symlink(kp2, kp), 0);
  CHECK(fq_accounts_open(d, &err) == NULL);
  CHECK_INT(err.code, FQ_EKEYFILE);
  CHECK(strstr(err.msg, "symbolic link") != NULL);
  CHECK_INT(unlink(kp), 0);
  CHECK_INT(rename(kp2, kp), 0);

  /* Wrong size: refused. */
  int fd = open(kp2, O_WRONLY | O_CREAT | O_EXCL, 0600);
  CHECK_INT(write(fd, "short", 5), 5);
  close(fd);
  CHECK_INT(rename(kp2, kp), 0); /* token.key is now 5 bytes */
  CHECK(fq_accounts_open(d, &err) == NULL);
  CHECK_INT(err.code, FQ_EKEYFILE);
  CHECK(strstr(err.msg, "exactly 32 bytes") != NULL);

  /* Another key of the right size: the store opens, the record does not
   * decrypt. */
  unlink(kp);
  fd = open(kp, O_WRONLY | O_CREAT | O_EXCL, 0600);
  CHECK_INT(write(fd, "0123456789abcdef0123456789abcdef", 32), 32);
  close(fd);
  s = fq_accounts_open(d, &err);
  CHECK(s != NULL);
  CHECK_INT(fq_accounts_get(s, "acct", out, &err), FQ_EVERIFY);
  fq_accounts_destroy(&s);
  fq_account_free(&a);
  fq_account_free(&out);
  rmrf(d);
}

FQ_TEST(accounts_scopes_from_jwt) {
  char *d = tmpdir();
  fq_err_t err;
  fq_accounts_t *s = fq_accounts_open(d, &err);
  fq_account_t *a = sample("jwt");
  /* {"scp":["energy_cmds"],"exp":1700000000} as an unsigned JWT */
  snprintf(a->access_token, sizeof a->access_token, "%s",
           "eyJhbGciOiJub25lIn0.eyJzY3AiOlsiZW5lcmd5X2NtZHMiXSwiZXhwIjoxNzAwMDAwMDAwfQ.x");
  a->scopes = 0;
  a->access_exp = 0;
  CHECK_INT(fq_accounts_put(s, a, &err), 0);
  CHECK_INT(fq_accounts_get(s, "jwt", a, &err), 0);
  CHECK_INT(a->scopes, FQ_SCOPE_ENERGY_CMDS);
  CHECK_INT(a->access_exp, 1700000000);
  fq_accounts_destroy(&s);
  fq_account_free(&a);
  rmrf(d);
}
