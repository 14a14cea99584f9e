/*
 * CURVE key files and Z85 key checks (curvekey.h).  The file format is
 * deliberately rigid, two fixed lines, so that a typo, a truncated copy or
 * a file meant for something else is refused with the line that is wrong
 * instead of producing a key that silently fails every handshake.
 */
#include "curvekey.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <zmq.h>

/* Two lines of 47 characters and their newlines; anything much longer is
 * not a key file, and reading stops there. */
#define KEYFILE_CAP 256

static const char g_z85[] = "0123456789abcdefghijklmnopqrstuvwxyz"
                            "ABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

bool fq_curve_key_valid(const char *z85) {
  if (!z85) return false;
  for (size_t g = 0; g < FQ_CURVE_KEY_LEN; g += 5) {
    uint64_t v = 0;
    for (size_t i = g; i < g + 5; i++) {
      /* strchr would also find the terminating NUL: check it first. */
      const char *at = z85[i] ? strchr(g_z85, z85[i]) : NULL;
      if (!at) return false;
      v = v * 85 + (uint64_t)(at - g_z85);
    }
    if (v > UINT32_MAX) return false;
  }
  return z85[FQ_CURVE_KEY_LEN] == '\0';
}

/* "group can read, others can write" for the group/other bits of mode. */
static void describe_access(mode_t mode, char *out, size_t cap) {
  static const struct {
    mode_t bit;
    const char *text;
  } bits[] = {{S_IRGRP, "group can read"},
              {S_IWGRP, "group can write"},
              {S_IROTH, "others can read"},
              {S_IWOTH, "others can write"}};
  size_t k = 0;
  out[0] = '\0';
  for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++) {
    if (!(mode & bits[i].bit)) continue;
    int w = snprintf(out + k, cap - k, "%s%s", k ? ", " : "", bits[i].text);
    if (w < 0 || (size_t)w >= cap - k) break;
    k += (size_t)w;
  }
}

/* The checks on the file itself: a regular file, not a symlink, that only
 * its owner can read or write. */
static int check_file(const char *path, const struct stat *st, fq_err_t *err) {
  if (S_ISLNK(st->st_mode))
    return fq_errf(err, FQ_EKEYFILE,
                   "%s: is a symbolic link; refusing to read a secret key through it (give the "
                   "real path)",
                   path);
  if (!S_ISREG(st->st_mode)) return fq_errf(err, FQ_EKEYFILE, "%s: not a regular file", path);
  mode_t loose = st->st_mode & (S_IRGRP | S_IWGRP | S_IROTH | S_IWOTH);
  if (loose) {
    char who[96];
    describe_access(loose, who, sizeof who);
    return fq_errf(err, FQ_EKEYFILE,
                   "%s: mode %04o exposes the secret key (%s); run 'chmod 600 %s'", path,
                   (unsigned)(st->st_mode & 07777), who, path);
  }
  return 0;
}

/* One line "<word> <40 Z85 characters>" of n bytes (newline excluded). */
static int parse_line(const char *line, size_t n, const char *word, char out[41],
                      const char *path, int lineno, fq_err_t *err) {
  size_t wl = strlen(word);
  if (n > 0 && line[n - 1] == '\r')
    return fq_errf(err, FQ_EKEYFILE, "%s line %d: ends in a carriage return (DOS line end); "
                   "expected '%s <40-character Z85 key>'", path, lineno, word);
  if (n < wl + 1 || memcmp(line, word, wl) != 0 || line[wl] != ' ')
    return fq_errf(err, FQ_EKEYFILE, "%s line %d: expected '%s <40-character Z85 key>'", path,
                   lineno, word);
  const char *key = line + wl + 1;
  size_t kl = n - wl - 1;
  if (kl != FQ_CURVE_KEY_LEN)
    return fq_errf(err, FQ_EKEYFILE, "%s line %d: the %s key is %zu characters, expected %d",
                   path, lineno, word, kl, FQ_CURVE_KEY_LEN);
  memcpy(out, key, FQ_CURVE_KEY_LEN);
  out[FQ_CURVE_KEY_LEN] = '\0';
  if (!fq_curve_key_valid(out))
    return fq_errf(err, FQ_EKEYFILE, "%s line %d: the %s key is not valid Z85", path, lineno,
                   word);
  return 0;
}

/* Split text[0..n) into the two lines and check them; the last newline is
 * optional, nothing may follow it. */
static int parse_keyfile(const char *text, size_t n, const char *path, char pub[41],
                         char sec[41], fq_err_t *err) {
  if (n == 0)
    return fq_errf(err, FQ_EKEYFILE,
                   "%s line 1: the file is empty; expected 'public <40-character Z85 key>'", path);
  const char *nl = memchr(text, '\n', n);
  if (!nl)
    return fq_errf(err, FQ_EKEYFILE, "%s line 2: missing; expected 'secret <40-character Z85 key>'",
                   path);
  int rc = parse_line(text, (size_t)(nl - text), "public", pub, path, 1, err);
  if (rc) return rc;
  const char *l2 = nl + 1;
  size_t left = n - (size_t)(l2 - text);
  if (left == 0)
    return fq_errf(err, FQ_EKEYFILE, "%s line 2: missing; expected 'secret <40-character Z85 key>'",
                   path);
  const char *nl2 = memchr(l2, '\n', left);
  size_t l2n = nl2 ? (size_t)(nl2 - l2) : left;
  rc = parse_line(l2, l2n, "secret", sec, path, 2, err);
  if (rc) return rc;
  if (nl2 && (size_t)(nl2 + 1 - text) != n)
    return fq_errf(err, FQ_EKEYFILE,
                   "%s line 3: unexpected content after the secret key (a key file holds "
                   "exactly two lines)",
                   path);
  return 0;
}

int fq_curve_keyfile_load(const char *path, char pub[41], char sec[41], fq_err_t *err) {
  char text[KEYFILE_CAP + 1], derived[41];
  size_t n = 0;
  int fd = -1, rc;
  struct stat st;
  memset(pub, 0, 41);
  memset(sec, 0, 41);
  /* lstat first for a clear word on symlinks and FIFOs (opening a FIFO
   * would block); the fstat below on what was opened is the check that
   * counts, O_NOFOLLOW closing the gap in between. */
  if (lstat(path, &st) != 0)
    return fq_errf(err, FQ_EKEYFILE, "%s: cannot read the key file: %s", path,
                   fq_strerror(-errno));
  if ((rc = check_file(path, &st, err))) return rc;
  fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return fq_errf(err, FQ_EKEYFILE, "%s: %s", path, fq_strerror(-errno));
  if (fstat(fd, &st) != 0) {
    rc = fq_errf(err, FQ_EKEYFILE, "%s: %s", path, fq_strerror(-errno));
    goto out;
  }
  if ((rc = check_file(path, &st, err))) goto out;
  for (;;) {
    ssize_t r = read(fd, text + n, sizeof text - 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      rc = fq_errf(err, FQ_EKEYFILE, "%s: %s", path, fq_strerror(-errno));
      goto out;
    }
    if (r == 0) break;
    n += (size_t)r;
    if (n == sizeof text - 1) {
      rc = fq_errf(err, FQ_EKEYFILE,
                   "%s: longer than a key file (%d bytes or more); expected two lines "
                   "'public <key>' and 'secret <key>'",
                   path, KEYFILE_CAP);
      goto out;
    }
  }
  text[n] = '\0';
  if ((rc = parse_keyfile(text, n, path, pub, sec, err))) goto out;
  if (zmq_curve_public(derived, sec) != 0) {
    rc = fq_errf(err, FQ_ECRYPTO, "%s: cannot derive the public key: %s", path,
                 zmq_strerror(zmq_errno()));
    goto out;
  }
  if (strcmp(derived, pub) != 0)
    rc = fq_errf(err, FQ_EKEYFILE,
                 "%s line 2: the secret key does not belong to the public key of line 1", path);
out:
  OPENSSL_cleanse(text, sizeof text);
  OPENSSL_cleanse(derived, sizeof derived);
  if (rc) {
    OPENSSL_cleanse(sec, 41);
    memset(pub, 0, 41);
  }
  if (fd >= 0) close(fd);
  return rc;
}

int fq_curve_keyfile_write(const char *path, char pub[41], fq_err_t *err) {
  char sec[41], text[2 * (7 + FQ_CURVE_KEY_LEN + 1) + 1];
  int rc = 0, fd = -1;
  struct stat st;
  memset(pub, 0, 41);
  /* Checked before generating, for the common mistake; O_EXCL below is
   * what makes it safe against a file appearing in between. */
  if (lstat(path, &st) == 0)
    return fq_errf(err, FQ_ECONFIG, "%s exists; refusing to overwrite", path);
  if (zmq_curve_keypair(pub, sec) != 0) {
    memset(pub, 0, 41);
    return fq_errf(err, FQ_ECRYPTO, "cannot generate a CURVE key pair: %s",
                   zmq_strerror(zmq_errno()));
  }
  int len = snprintf(text, sizeof text, "public %s\nsecret %s\n", pub, sec);
  fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    int e = errno;
    rc = e == EEXIST ? fq_errf(err, FQ_ECONFIG, "%s exists; refusing to overwrite", path)
                     : fq_errf(err, -e, "cannot create %s: %s", path, fq_strerror(-e));
    goto out;
  }
  /* The umask may have taken bits away or, set oddly, the mode given to
   * open may not be what ends up on disk: state it once more. */
  if (fchmod(fd, 0600) != 0) {
    int e = errno;
    rc = fq_errf(err, -e, "chmod 600 %s: %s", path, fq_strerror(-e));
    goto out;
  }
  for (size_t done = 0; done < (size_t)len;) {
    ssize_t w = write(fd, text + done, (size_t)len - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      int e = errno;
      rc = fq_errf(err, -e, "write %s: %s", path, fq_strerror(-e));
      goto out;
    }
    done += (size_t)w;
  }
  if (fsync(fd) != 0) {
    int e = errno;
    rc = fq_errf(err, -e, "fsync %s: %s", path, fq_strerror(-e));
  }
out:
  if (fd >= 0 && close(fd) != 0 && rc == 0) {
    int e = errno;
    rc = fq_errf(err, -e, "close %s: %s", path, fq_strerror(-e));
  }
  /* Never leave half a key behind: a later load would refuse it anyway,
   * but a retry of keygen would then be refused too. */
  if (rc && fd >= 0) unlink(path);
  if (rc) memset(pub, 0, 41);
  OPENSSL_cleanse(sec, sizeof sec);
  OPENSSL_cleanse(text, sizeof text);
  return rc;
}
