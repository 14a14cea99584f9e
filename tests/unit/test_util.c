/*
 * Unit tests of util.c and error.c: buffers with caps, hex, base64,
 * base64url, the pair hash, the error table, the secret-file check and
 * fq_fatal.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fleetq/error.h"
#include "fq_test.h"
#include "log.h"
#include "util.h"

FQ_TEST(buf_cap_is_enforced) {
  fq_buf_t b;
  fq_buf_init(&b, 10);
  CHECK_INT(fq_buf_append(&b, "12345", 5), 0);
  CHECK_INT(fq_buf_append(&b, "12345", 5), 0);
  CHECK_INT(fq_buf_append(&b, "1", 1), FQ_ETOOLARGE);
  CHECK_INT(b.len, 10);
  fq_buf_free(&b);
}

FQ_TEST(hex_roundtrip) {
  uint8_t in[] = {0x00, 0x7f, 0xab, 0xff}, out[8];
  char hex[9];
  fq_hex_encode(in, 4, hex);
  CHECK_STR(hex, "007fabff");
  CHECK_INT(fq_hex_decode("007FABff", out, sizeof out), 4);
  CHECK_MEM(out, 4, in, 4);
  CHECK_INT(fq_hex_decode("abc", out, sizeof out), -1);
  CHECK_INT(fq_hex_decode("zz", out, sizeof out), -1);
  CHECK_INT(fq_hex_decode("0011", out, 1), -1);
}

FQ_TEST(base64_rfc4648_vectors) {
  static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  static const char *enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
  for (int i = 0; i < 7; i++) {
    char out[16];
    uint8_t back[16];
    fq_base64_encode((const uint8_t *)plain[i], strlen(plain[i]), out);
    CHECK_STR(out, enc[i]);
    long n = fq_base64_decode(enc[i], strlen(enc[i]), back, sizeof back);
    CHECK_INT(n, (long)strlen(plain[i]));
    CHECK_MEM(back, (size_t)n, plain[i], strlen(plain[i]));
  }
  uint8_t back[4];
  CHECK_INT(fq_base64_decode("Zm9v!", 5, back, sizeof back), -1);
}

/* RFC 4648 section 10 vectors without padding, plus bytes that use the two
 * characters where base64url differs from base64. */
FQ_TEST(base64url_rfc4648_vectors) {
  static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  static const char *enc[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
  for (int i = 0; i < 7; i++) {
    char out[16];
    uint8_t back[16];
    size_t n = fq_base64url_encode((const uint8_t *)plain[i], strlen(plain[i]), out);
    CHECK_STR(out, enc[i]);
    CHECK_INT(n, strlen(enc[i]));
    long m = fq_base64url_decode(enc[i], strlen(enc[i]), back, sizeof back);
    CHECK_INT(m, (long)strlen(plain[i]));
    CHECK_MEM(back, (size_t)m, plain[i], strlen(plain[i]));
  }
  /* 0xfb 0xff 0xbf is "+/+/" in base64 and "-_-_" in base64url. */
  static const uint8_t odd[] = {0xfb, 0xff, 0xbf};
  char out[8], std[8];
  uint8_t back[8];
  fq_base64url_encode(odd, 3, out);
  CHECK_STR(out, "-_-_");
  fq_base64_encode(odd, 3, std);
  CHECK_STR(std, "+/+/");
  CHECK_INT(fq_base64url_decode("-_-_", 4, back, sizeof back), 3);
  CHECK_MEM(back, 3, odd, 3);
  /* Each decoder refuses the other alphabet's two digits. */
  CHECK_INT(fq_base64url_decode("+/+/", 4, back, sizeof back), -1);
  CHECK_INT(fq_base64_decode("-_-_", 4, back, sizeof back), -1);
  /* Padding is accepted; a length of 4k+1 and overflow are not. */
  CHECK_INT(fq_base64url_decode("Zm8=", 4, back, sizeof back), 2);
  CHECK_INT(fq_base64url_decode("Zm9vY", 5, back, sizeof back), -1);
  CHECK_INT(fq_base64url_decode("Zm9vYmFy", 8, back, 5), -1);
}

FQ_TEST(hash64_pair_keeps_the_boundary) {
  CHECK(fq_hash64_pair("a", 1, "bc", 2) != fq_hash64_pair("ab", 2, "c", 1));
  CHECK(fq_hash64_pair("t", 1, "k", 1) == fq_hash64_pair("t", 1, "k", 1));
  CHECK(fq_hash64_pair("t", 1, "k", 1) != fq_hash64_pair("k", 1, "t", 1));
  /* Known answers (FNV-1a 64 then the finalizer, computed independently):
   * fq_hash64 picks a device's shard, so it must never change. */
  CHECK(fq_hash64("", 0) == 0xe36f5519ee926a53ULL);
  CHECK(fq_hash64("v:5YJ3E1EA7JF000001", 19) == 0xc91a86ccefcbf624ULL);
  CHECK(fq_hash64_pair("tenant", 6, "key-1", 5) == 0xabedf1d1d2053be3ULL);
}

FQ_TEST(error_names_round_trip) {
  CHECK_STR(fq_errname(FQ_EBADREQ), "bad_request");
  CHECK_STR(fq_errname(FQ_EIDEMMISMATCH), "idempotency_mismatch");
  CHECK_STR(fq_wire_errname(FQ_ESTORAGE), "internal");
  CHECK_STR(fq_wire_errname(-5), "internal");
  CHECK_INT(fq_errcode("not_cancellable"), FQ_ENOTCANCEL);
  /* A wire code added after the first twelve: on the wire by its name, and
   * appended last, so the numbers stored in command records never move. */
  CHECK_STR(fq_wire_errname(FQ_EUNKACCT), "unknown_account");
  CHECK_INT(fq_errcode("unknown_account"), FQ_EUNKACCT);
  CHECK_INT(FQ_EUNKACCT, FQ_ERROR_END_ - 2);
  /* budget_exceeded (issue 16): appended after it, on the wire by name. */
  CHECK_STR(fq_wire_errname(FQ_EBUDGET), "budget_exceeded");
  CHECK_INT(fq_errcode("budget_exceeded"), FQ_EBUDGET);
  CHECK_INT(FQ_EBUDGET, FQ_ERROR_END_ - 1);
  CHECK_INT(FQ_EASLEEP, FQ_ERROR_BASE_ + 30);
  CHECK_INT(fq_errcode("no_such_code"), 0);
  fq_err_t e;
  fq_err_clear(&e);
  CHECK_INT(fq_errf(&e, FQ_EBADPARAM, "params.%s bad", "x"), FQ_EBADPARAM);
  CHECK_STR(e.msg, "params.x bad");
}

/* Issue 13 (8): tcp://localhost:P passes the loopback check and is bound
 * as 127.0.0.1 (ZeroMQ cannot bind a host name); nothing else changes. */
FQ_TEST(endpoint_localhost_is_bound_as_127_0_0_1) {
  char ep[64] = "tcp://localhost:5555";
  CHECK(fq_endpoint_is_local(ep));
  CHECK(fq_endpoint_bindable(ep, sizeof ep));
  CHECK_STR(ep, "tcp://127.0.0.1:5555");
  CHECK(fq_endpoint_is_local(ep));
  const char *same[] = {"tcp://127.0.0.1:5555", "tcp://[::1]:5", "ipc:///tmp/x",
                        "tcp://localhostile:1", "tcp://localhost", "tcp://LOCALHOST:1"};
  for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
    snprintf(ep, sizeof ep, "%s", same[i]);
    CHECK(!fq_endpoint_bindable(ep, sizeof ep));
    CHECK_STR(ep, same[i]);
  }
}

FQ_TEST(secret_file_permissions) {
  char path[] = "/tmp/fq_secret_XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  close(fd);
  fq_err_t e;
  chmod(path, 0600);
  CHECK_INT(fq_check_secret_file(path, &e), 0);
  chmod(path, 0640);
  CHECK_INT(fq_check_secret_file(path, &e), FQ_EKEYFILE);
  CHECK(strstr(e.msg, "chmod 600") != NULL);
  char link[64];
  snprintf(link, sizeof link, "%s.lnk", path);
  chmod(path, 0600);
  CHECK_INT(symlink(path, link), 0);
  CHECK_INT(fq_check_secret_file(link, &e), FQ_EKEYFILE);
  CHECK(strstr(e.msg, "symbolic link") != NULL);
  unlink(link);
  unlink(path);
}

/* The shard of a device is fq_hash64 of its key: the value must never
 * change between versions, or stored commands would be looked for in the
 * wrong shard. */
FQ_TEST(hash64_is_stable) {
  const char *k = "v:5YJ3E1EA7KF000001";
  CHECK(fq_hash64(k, strlen(k)) == 0x94ff5070792acb49ULL);
  CHECK(fq_hash64("", 0) != fq_hash64("a", 1));
}

/* fq_fatal, called from a thread other than main: one error line on
 * stderr, status 70, and no atexit handler (it must not run while other
 * threads are alive). */
static void fatal_atexit(void) {
  ssize_t w = write(STDERR_FILENO, "atexit ran\n", 11);
  (void)w;
}

static void *fatal_thread(void *arg) {
  (void)arg;
  fq_fatal("shard %u: %s", 3u, "commit failed");
}

FQ_TEST(fatal_logs_and_exits_70_from_a_thread) {
  int fds[2];
  CHECK_INT(pipe(fds), 0);
  fflush(NULL);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], STDERR_FILENO);
    close(fds[0]);
    atexit(fatal_atexit);
    fq_log_set_level(FQ_LOG_ERROR);
    pthread_t t;
    if (pthread_create(&t, NULL, fatal_thread, NULL) != 0) _exit(1);
    for (;;) pause(); /* the main thread stays busy elsewhere */
  }
  close(fds[1]);
  char out[2048];
  size_t len = 0;
  ssize_t n;
  while (len < sizeof out - 1 && (n = read(fds[0], out + len, sizeof out - 1 - len)) > 0)
    len += (size_t)n;
  out[len] = 0;
  close(fds[0]);
  int st = 0;
  CHECK_INT(waitpid(pid, &st, 0), pid);
  CHECK(WIFEXITED(st));
  CHECK_INT(WEXITSTATUS(st), FQ_FATAL_STATUS);
  CHECK_INT(FQ_FATAL_STATUS, 70);
  if (!strstr(out, "error fatal: shard 3: commit failed\n") || strstr(out, "atexit"))
    FQ__FAIL("unexpected output: \"%s\"", out);
}
