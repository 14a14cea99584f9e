/*
 * Unit tests of the CURVE key files (src/base/curvekey.c): Z85 key checks,
 * write then load, the file's mode whatever the umask, and every refusal
 * of the loader (overwrite, loose mode, symlink, not a file, bad lines,
 * bad Z85, a secret that is not the public key's), each with the path and
 * line in the message and never the secret.
 */
#include <errno.h>
#include <ftw.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zmq.h>

#include "curvekey.h"
#include "fq_test.h"

/* A fresh directory per test (each test runs in its own process, which
 * exits through exit(): the atexit handler removes the directory and the
 * test keys in it). */
static char g_dir[64];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void rm_tmpdir(void) {
  if (g_dir[0]) nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *tmpdir(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/fq-curvekey-XXXXXX");
  if (!mkdtemp(g_dir)) {
    fprintf(stderr, "mkdtemp: errno %d\n", errno);
    abort();
  }
  atexit(rm_tmpdir);
  return g_dir;
}

static void path_in(char *out, size_t cap, const char *name) {
  snprintf(out, cap, "%s/%s", g_dir, name);
}

/* Write text to path with mode (exactly, whatever the umask). */
static void put_file(const char *path, const char *text, mode_t mode) {
  FILE *f = fopen(path, "w");
  if (!f) abort();
  fputs(text, f);
  fclose(f);
  chmod(path, mode);
}

static size_t slurp(const char *path, char *out, size_t cap) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(out, 1, cap - 1, f);
  fclose(f);
  out[n] = 0;
  return n;
}

/* A valid pair's file text, and its keys. */
static void make_pair_text(char *text, size_t cap, char pub[41], char sec[41]) {
  if (zmq_curve_keypair(pub, sec) != 0) abort();
  snprintf(text, cap, "public %s\nsecret %s\n", pub, sec);
}

/* Load a file that must be refused with code, its message holding every
 * fragment given (NULL-terminated), and pub/sec zeroed. */
static void expect_refused(const char *path, int code, const char *const *frags) {
  char pub[41], sec[41];
  fq_err_t e;
  fq_err_clear(&e);
  memset(pub, 'x', sizeof pub);
  memset(sec, 'x', sizeof sec);
  int rc = fq_curve_keyfile_load(path, pub, sec, &e);
  CHECK_INT(rc, code);
  CHECK_INT(e.code, code);
  for (const char *const *f = frags; *f; f++)
    if (!strstr(e.msg, *f)) FQ__FAIL("message \"%s\" lacks \"%s\"", e.msg, *f);
  CHECK_INT(pub[0], 0);
  CHECK_INT(sec[0], 0);
}

FQ_TEST(key_valid) {
  char pub[41], sec[41];
  CHECK_INT(zmq_curve_keypair(pub, sec), 0);
  CHECK(fq_curve_key_valid(pub));
  CHECK(fq_curve_key_valid(sec));
  /* The client public key of ZeroMQ's CURVE examples. */
  CHECK(fq_curve_key_valid("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"));
  CHECK(!fq_curve_key_valid(NULL));
  CHECK(!fq_curve_key_valid(""));
  char k[64];
  snprintf(k, sizeof k, "%.39s", pub);
  CHECK(!fq_curve_key_valid(k)); /* 39 characters */
  snprintf(k, sizeof k, "%sA", pub);
  CHECK(!fq_curve_key_valid(k)); /* 41 */
  snprintf(k, sizeof k, "%s", pub);
  k[7] = '"'; /* not in the Z85 alphabet */
  CHECK(!fq_curve_key_valid(k));
  k[7] = ' ';
  CHECK(!fq_curve_key_valid(k));
  k[7] = ',';
  CHECK(!fq_curve_key_valid(k));
  /* Every character is in the alphabet, but "#####" is 85^5 - 1, beyond
   * 32 bits: not the text of any 32 bytes. */
  CHECK(!fq_curve_key_valid("########################################"));
  snprintf(k, sizeof k, "%.35s%s", pub, "%nSc0");  /* 0xffffffff: the largest group */
  CHECK(fq_curve_key_valid(k));
  snprintf(k, sizeof k, "%.35s%s", pub, "%nSc1");  /* 0xffffffff + 1 */
  CHECK(!fq_curve_key_valid(k));
}

FQ_TEST(write_then_load_round_trip) {
  tmpdir();
  char path[128], pub[41], pub2[41], sec[41], text[256], derived[41];
  path_in(path, sizeof path, "client.key");
  fq_err_t e;
  fq_err_clear(&e);
  CHECK_INT(fq_curve_keyfile_write(path, pub, &e), 0);
  CHECK_INT((int)strlen(pub), 40);
  CHECK(fq_curve_key_valid(pub));
  /* The exact form: two lines, 96 bytes. */
  size_t n = slurp(path, text, sizeof text);
  CHECK_INT(n, 2 * (7 + 40 + 1));
  CHECK(strncmp(text, "public ", 7) == 0);
  CHECK(strncmp(text + 7, pub, 40) == 0);
  CHECK_INT(text[47], '\n');
  CHECK(strncmp(text + 48, "secret ", 7) == 0);
  CHECK_INT(text[95], '\n');
  CHECK_INT(fq_curve_keyfile_load(path, pub2, sec, &e), 0);
  CHECK_STR(pub2, pub);
  CHECK(fq_curve_key_valid(sec));
  CHECK(strncmp(text + 55, sec, 40) == 0);
  CHECK_INT(zmq_curve_public(derived, sec), 0);
  CHECK_STR(derived, pub);
  /* The final newline is optional. */
  char path2[128];
  path_in(path2, sizeof path2, "nonl.key");
  text[95] = 0;
  put_file(path2, text, 0600);
  CHECK_INT(fq_curve_keyfile_load(path2, pub2, sec, &e), 0);
  CHECK_STR(pub2, pub);
  /* 0400 is fine too: only group and others matter. */
  chmod(path2, 0400);
  CHECK_INT(fq_curve_keyfile_load(path2, pub2, sec, &e), 0);
}

FQ_TEST(written_mode_is_0600_whatever_the_umask) {
  tmpdir();
  static const mode_t masks[] = {0, 022, 077, 0277};
  for (size_t i = 0; i < sizeof masks / sizeof masks[0]; i++) {
    char path[128], name[32], pub[41];
    snprintf(name, sizeof name, "k%zu.key", i);
    path_in(path, sizeof path, name);
    umask(masks[i]);
    fq_err_t e;
    CHECK_INT(fq_curve_keyfile_write(path, pub, &e), 0);
    struct stat st;
    CHECK_INT(lstat(path, &st), 0);
    if ((st.st_mode & 07777) != 0600)
      FQ__FAIL("umask %03o: mode %04o, expected 0600", (unsigned)masks[i],
               (unsigned)(st.st_mode & 07777));
    CHECK(S_ISREG(st.st_mode));
  }
  umask(022);
}

FQ_TEST(write_refuses_an_existing_path) {
  tmpdir();
  char path[128], pub[41], pub2[41], before[256], after[256];
  path_in(path, sizeof path, "a.key");
  fq_err_t e;
  CHECK_INT(fq_curve_keyfile_write(path, pub, &e), 0);
  slurp(path, before, sizeof before);
  fq_err_clear(&e);
  CHECK_INT(fq_curve_keyfile_write(path, pub2, &e), FQ_ECONFIG);
  CHECK(strstr(e.msg, "exists; refusing to overwrite") != NULL);
  CHECK(strstr(e.msg, path) != NULL);
  CHECK_INT(pub2[0], 0);
  slurp(path, after, sizeof after);
  CHECK_STR(after, before);
  /* A dangling symlink is "existing" too: writing through it could create
   * a file wherever the link points. */
  char link[128], target[128];
  path_in(link, sizeof link, "dangling.key");
  path_in(target, sizeof target, "elsewhere.key");
  CHECK_INT(symlink(target, link), 0);
  CHECK_INT(fq_curve_keyfile_write(link, pub2, &e), FQ_ECONFIG);
  CHECK(access(target, F_OK) != 0);
  /* A directory that does not exist: an errno, the path named. */
  char deep[160];
  path_in(deep, sizeof deep, "no/such/dir.key");
  CHECK_INT(fq_curve_keyfile_write(deep, pub2, &e), -ENOENT);
  CHECK(strstr(e.msg, deep) != NULL);
}

FQ_TEST(load_refuses_loose_modes) {
  tmpdir();
  char path[128], pub[41], sec[41], text[256];
  make_pair_text(text, sizeof text, pub, sec);
  path_in(path, sizeof path, "loose.key");
  put_file(path, text, 0644);
  const char *f644[] = {path, "0644", "group can read", "others can read", "chmod 600", NULL};
  expect_refused(path, FQ_EKEYFILE, f644);
  chmod(path, 0620);
  const char *f620[] = {"group can write", "chmod 600", NULL};
  expect_refused(path, FQ_EKEYFILE, f620);
  chmod(path, 0602);
  const char *f602[] = {"others can write", NULL};
  expect_refused(path, FQ_EKEYFILE, f602);
  chmod(path, 0640);
  const char *f640[] = {"(group can read)", NULL};
  expect_refused(path, FQ_EKEYFILE, f640);
  chmod(path, 0600);
  fq_err_t e;
  CHECK_INT(fq_curve_keyfile_load(path, pub, sec, &e), 0);
}

FQ_TEST(load_refuses_symlinks_and_non_files) {
  tmpdir();
  char path[128], link[128], pub[41], sec[41], text[256];
  make_pair_text(text, sizeof text, pub, sec);
  path_in(path, sizeof path, "real.key");
  put_file(path, text, 0600);
  path_in(link, sizeof link, "link.key");
  CHECK_INT(symlink(path, link), 0);
  const char *fl[] = {link, "symbolic link", NULL};
  expect_refused(link, FQ_EKEYFILE, fl);
  const char *fd[] = {g_dir, "not a regular file", NULL};
  expect_refused(g_dir, FQ_EKEYFILE, fd);
  /* A FIFO is refused without blocking on open. */
  char fifo[128];
  path_in(fifo, sizeof fifo, "fifo.key");
  CHECK_INT(mkfifo(fifo, 0600), 0);
  const char *ff[] = {"not a regular file", NULL};
  expect_refused(fifo, FQ_EKEYFILE, ff);
  char missing[128];
  path_in(missing, sizeof missing, "missing.key");
  const char *fm[] = {missing, "No such file", NULL};
  expect_refused(missing, FQ_EKEYFILE, fm);
}

FQ_TEST(load_refuses_bad_lines) {
  tmpdir();
  char pub[41], sec[41], good[256], bad[512], path[128];
  make_pair_text(good, sizeof good, pub, sec);
  path_in(path, sizeof path, "bad.key");
  struct {
    const char *what;
    int kind; /* how bad[] is made from the keys */
    const char *frag1, *frag2;
  } cases[] = {
      {"empty", 0, "line 1", "empty"},
      {"word misspelt", 1, "line 1", "expected 'public <40-character Z85 key>'"},
      {"lines swapped", 2, "line 1", "expected 'public"},
      {"no second line", 3, "line 2", "missing"},
      {"second line empty", 4, "line 2", "missing"},
      {"third line", 5, "line 3", "exactly two lines"},
      {"short public key", 6, "line 1", "39 characters, expected 40"},
      {"long secret key", 7, "line 2", "41 characters, expected 40"},
      {"CRLF", 8, "line 1", "carriage return"},
      {"two spaces", 9, "line 1", "41 characters"},
      {"trailing blank line", 10, "line 3", "exactly two lines"},
      {"far too long", 11, "longer than a key file", NULL},
      {"tab instead of space", 12, "line 2", "expected 'secret"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    switch (cases[i].kind) {
    case 0: bad[0] = 0; break;
    case 1: snprintf(bad, sizeof bad, "publik %s\nsecret %s\n", pub, sec); break;
    case 2: snprintf(bad, sizeof bad, "secret %s\npublic %s\n", sec, pub); break;
    case 3: snprintf(bad, sizeof bad, "public %s", pub); break;
    case 4: snprintf(bad, sizeof bad, "public %s\n", pub); break;
    case 5: snprintf(bad, sizeof bad, "%sextra\n", good); break;
    case 6: snprintf(bad, sizeof bad, "public %.39s\nsecret %s\n", pub, sec); break;
    case 7: snprintf(bad, sizeof bad, "public %s\nsecret %sA\n", pub, sec); break;
    case 8: snprintf(bad, sizeof bad, "public %s\r\nsecret %s\r\n", pub, sec); break;
    case 9: snprintf(bad, sizeof bad, "public  %s\nsecret %s\n", pub, sec); break;
    case 10: snprintf(bad, sizeof bad, "%s\n", good); break;
    case 11:
      memset(bad, 'a', 400);
      bad[400] = 0;
      break;
    case 12: snprintf(bad, sizeof bad, "public %s\nsecret\t%s\n", pub, sec); break;
    }
    unlink(path);
    put_file(path, bad, 0600);
    fq_err_t e;
    char p2[41], s2[41];
    fq_err_clear(&e);
    int rc = fq_curve_keyfile_load(path, p2, s2, &e);
    if (rc != FQ_EKEYFILE) FQ__FAIL("%s: rc %d, expected FQ_EKEYFILE", cases[i].what, rc);
    if (!strstr(e.msg, path)) FQ__FAIL("%s: \"%s\" lacks the path", cases[i].what, e.msg);
    if (!strstr(e.msg, cases[i].frag1))
      FQ__FAIL("%s: \"%s\" lacks \"%s\"", cases[i].what, e.msg, cases[i].frag1);
    if (cases[i].frag2 && !strstr(e.msg, cases[i].frag2))
      FQ__FAIL("%s: \"%s\" lacks \"%s\"", cases[i].what, e.msg, cases[i].frag2);
    if (strstr(e.msg, sec)) FQ__FAIL("%s: the message shows the secret key", cases[i].what);
  }
}

FQ_TEST(load_refuses_bad_z85) {
  tmpdir();
  char pub[41], sec[41], text[256], path[128];
  path_in(path, sizeof path, "z85.key");
  CHECK_INT(zmq_curve_keypair(pub, sec), 0);
  char badpub[41];
  memcpy(badpub, pub, sizeof badpub);
  badpub[3] = '"';
  snprintf(text, sizeof text, "public %s\nsecret %s\n", badpub, sec);
  put_file(path, text, 0600);
  const char *f1[] = {path, "line 1", "public key is not valid Z85", NULL};
  expect_refused(path, FQ_EKEYFILE, f1);
  /* Alphabet characters only, but a group beyond 32 bits. */
  char badsec[41];
  memcpy(badsec, sec, sizeof badsec);
  memcpy(badsec + 10, "#####", 5);
  snprintf(text, sizeof text, "public %s\nsecret %s\n", pub, badsec);
  unlink(path);
  put_file(path, text, 0600);
  const char *f2[] = {"line 2", "secret key is not valid Z85", NULL};
  expect_refused(path, FQ_EKEYFILE, f2);
}

FQ_TEST(load_refuses_a_mismatched_pair) {
  tmpdir();
  char pub_a[41], sec_a[41], pub_b[41], sec_b[41], text[256], path[128];
  CHECK_INT(zmq_curve_keypair(pub_a, sec_a), 0);
  CHECK_INT(zmq_curve_keypair(pub_b, sec_b), 0);
  path_in(path, sizeof path, "mixed.key");
  snprintf(text, sizeof text, "public %s\nsecret %s\n", pub_a, sec_b);
  put_file(path, text, 0600);
  const char *f[] = {path, "line 2", "does not belong to the public key", NULL};
  expect_refused(path, FQ_EKEYFILE, f);
  fq_err_t e;
  char p[41], s[41];
  fq_curve_keyfile_load(path, p, s, &e);
  CHECK(strstr(e.msg, sec_b) == NULL);
}
