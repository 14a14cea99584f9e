/*
 * Implementation of the log lines described in log.h.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int min_level = FQ_LOG_INFO;
static _Atomic int log_format = FQ_LOG_TEXT;
/* Where lines go.  A log file keeps its descriptor number for the whole
 * run: fq_log_reopen() puts the new file under the same number with
 * dup2(2), so a writer never sees a closed descriptor. */
static _Atomic int log_fd = STDERR_FILENO;
static char log_path[4096];
static pthread_mutex_t reopen_mu = PTHREAD_MUTEX_INITIALIZER;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void fq_log_set_level(int level) { atomic_store(&min_level, level); }
int fq_log_get_level(void) { return atomic_load(&min_level); }
void fq_log_set_format(int format) { atomic_store(&log_format, format); }

int fq_log_parse_level(const char *s) {
  for (int i = 0; i < 4; i++)
    if (strcmp(s, level_names[i]) == 0) return i;
  return -1;
}

const char *fq_log_level_name(int level) {
  return level >= 0 && level < 4 ? level_names[level] : "?";
}

int fq_log_parse_format(const char *s) {
  if (strcmp(s, "text") == 0) return FQ_LOG_TEXT;
  if (strcmp(s, "json") == 0) return FQ_LOG_JSON;
  return -1;
}

static int open_file(const char *path, fq_err_t *err) {
  /* 0640: an operator's group (adm) may read the log, nobody else; the
   * daemon never logs secrets, but the lines name tenants and vehicles. */
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
  if (fd < 0) return fq_errf(err, FQ_ECONFIG, "--log-file %s: %s", path, fq_strerror(-errno));
  return fd;
}

int fq_log_open(const char *path, fq_err_t *err) {
  if (strlen(path) >= sizeof log_path)
    return fq_errf(err, FQ_ECONFIG, "--log-file: path too long");
  int fd = open_file(path, err);
  if (fd < 0) return FQ_ECONFIG;
  /* Never below 3: a descriptor number of stdin/stdout/stderr could be
   * reused by whatever the process opens when those are closed. */
  if (fd <= STDERR_FILENO) {
    int hi = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    close(fd);
    if (hi < 0) return fq_errf(err, FQ_ECONFIG, "--log-file %s: %s", path, fq_strerror(-errno));
    fd = hi;
  }
  snprintf(log_path, sizeof log_path, "%s", path);
  atomic_store(&log_fd, fd);
  return 0;
}

int fq_log_reopen(fq_err_t *err) {
  int rc = 0;
  pthread_mutex_lock(&reopen_mu);
  int cur = atomic_load(&log_fd);
  if (log_path[0] && cur > STDERR_FILENO) {
    int fd = open_file(log_path, err);
    if (fd < 0) {
      rc = FQ_ECONFIG;
    } else {
      /* dup3 replaces cur in one step: a concurrent write goes to the old
       * file or to the new one.  O_CLOEXEC is not inherited through dup. */
      if (dup3(fd, cur, O_CLOEXEC) < 0)
        rc = fq_errf(err, FQ_ECONFIG, "--log-file %s: %s", log_path, fq_strerror(-errno));
      close(fd);
    }
  }
  pthread_mutex_unlock(&reopen_mu);
  return rc;
}

/* --- line building ---------------------------------------------------------
 *
 * A writer into a fixed buffer that keeps `reserve` bytes free for the
 * line's end ("}\n", or "\n"): every append either fits whole below that
 * or is cut at a character boundary, so what was written is always valid
 * and closable. */

typedef struct lw {
  char *p;
  size_t n, cap, reserve;
} lw_t;

static bool lw_room(const lw_t *w, size_t k) { return w->n + k + w->reserve <= w->cap; }

static bool lw_put(lw_t *w, const char *s, size_t k) {
  if (!lw_room(w, k)) return false;
  memcpy(w->p + w->n, s, k);
  w->n += k;
  return true;
}

static bool lw_puts(lw_t *w, const char *s) { return lw_put(w, s, strlen(s)); }

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 when the
 * bytes there are not one: overlong forms, surrogates and code points past
 * U+10FFFF are refused like stray continuation bytes. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  size_t len;
  unsigned min;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) len = 2, min = 0x80;
  else if (c >= 0xe0 && c <= 0xef) len = 3, min = 0x800;
  else if (c >= 0xf0 && c <= 0xf4) len = 4, min = 0x10000;
  else return 0;
  if (n < len) return 0;
  unsigned cp = c & (0x7f >> len);
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

/* A JSON string's contents (no quotes): escapes, U+FFFD for bytes that
 * are not UTF-8.  Stops before the first character that does not fit. */
static void lw_json_str(lw_t *w, const char *str) {
  const unsigned char *s = (const unsigned char *)str;
  size_t n = strlen(str);
  for (size_t i = 0; i < n;) {
    unsigned c = s[i];
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      if (!lw_put(w, esc, 2)) return;
      i++;
    } else if (c < 0x20 || c == 0x7f) {
      const char *named = c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r" : NULL;
      if (named) {
        if (!lw_puts(w, named)) return;
      } else {
        snprintf(esc, sizeof esc, "\\u%04x", c);
        if (!lw_put(w, esc, 6)) return;
      }
      i++;
    } else {
      size_t k = utf8_len(s + i, n - i);
      if (k == 0) {
        if (!lw_puts(w, "\\ufffd")) return;
        i++;
      } else {
        if (!lw_put(w, (const char *)s + i, k)) return;
        i += k;
      }
    }
  }
}

/* Text: control bytes escaped so that one event stays one line; inside
 * quotes (quoted) also '"' and '\'. */
static void lw_text_str(lw_t *w, const char *str, bool quoted) {
  for (const unsigned char *s = (const unsigned char *)str; *s; s++) {
    unsigned c = *s;
    char esc[8];
    if (c < 0x20 || c == 0x7f) {
      const char *named = c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r" : NULL;
      if (named) snprintf(esc, sizeof esc, "%s", named);
      else snprintf(esc, sizeof esc, "\\x%02x", c);
      if (!lw_puts(w, esc)) return;
    } else if (quoted && (c == '"' || c == '\\')) {
      esc[0] = '\\';
      esc[1] = (char)c;
      if (!lw_put(w, esc, 2)) return;
    } else if (!lw_put(w, (const char *)s, 1)) {
      return;
    }
  }
}

static bool needs_quotes(const char *v) {
  if (!*v) return true;
  for (const unsigned char *s = (const unsigned char *)v; *s; s++)
    if (*s <= ' ' || *s == '"' || *s == '=' || *s == 0x7f || *s == '\\') return true;
  return false;
}

size_t fq_log_format_line(char *out, size_t cap, int format, long long now_ms, int level,
                          const char *module, const char *msg, const fq_log_field_t *fields,
                          size_t n) {
  char ts[80];
  time_t sec = (time_t)(now_ms / 1000);
  struct tm tm;
  gmtime_r(&sec, &tm);
  snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(now_ms % 1000));
  const char *lvl = fq_log_level_name(level);
  bool json = format == FQ_LOG_JSON;
  /* The end: JSON closes the open string and the object. */
  lw_t w = {out, 0, cap, json ? 3 : 1};
  if (json) {
    lw_puts(&w, "{\"ts\":\"");
    lw_puts(&w, ts);
    lw_puts(&w, "\",\"level\":\"");
    lw_puts(&w, lvl);
    lw_puts(&w, "\",\"module\":\"");
    lw_json_str(&w, module);
    lw_puts(&w, "\",\"msg\":\"");
    /* Leave the fields some room when the message is long. */
    size_t keep = w.reserve;
    if (n && cap > 1024) w.reserve += 512;
    lw_json_str(&w, msg);
    w.reserve = keep;
    for (size_t i = 0; i < n; i++) {
      if (!fields[i].key || !fields[i].val) continue;
      /* A field is written whole from its key on, or not at all. */
      size_t at = w.n;
      if (!lw_puts(&w, "\",\"")) break;
      size_t kat = w.n;
      lw_json_str(&w, fields[i].key);
      if (w.n - kat != strlen(fields[i].key) || !lw_puts(&w, "\":\"")) {
        w.n = at;
        break;
      }
      lw_json_str(&w, fields[i].val);
    }
    /* Room was kept for these three. */
    memcpy(out + w.n, "\"}\n", 3);
    return w.n + 3;
  }
  char head[128];
  snprintf(head, sizeof head, "%s %-5s ", ts, lvl);
  lw_puts(&w, head);
  lw_text_str(&w, module, false);
  lw_puts(&w, ": ");
  size_t keep = w.reserve;
  if (n && cap > 1024) w.reserve += 512;
  lw_text_str(&w, msg, false);
  w.reserve = keep;
  for (size_t i = 0; i < n; i++) {
    if (!fields[i].key || !fields[i].val) continue;
    bool q = needs_quotes(fields[i].val);
    size_t at = w.n;
    if (!lw_puts(&w, " ") || !lw_puts(&w, fields[i].key) || !lw_puts(&w, q ? "=\"" : "=")) {
      w.n = at;
      break;
    }
    lw_text_str(&w, fields[i].val, q);
    /* A value cut short has no room left for its closing quote: the
     * field goes whole, so that the line never holds an open quote. */
    if (q && !lw_puts(&w, "\"")) {
      w.n = at;
      break;
    }
  }
  out[w.n++] = '\n';
  return w.n;
}

__attribute__((format(printf, 5, 0))) static void log_line(int level, const char *module,
                                                           const fq_log_field_t *fields,
                                                           size_t n, const char *fmt, va_list ap) {
  char msg[2048];
  char line[FQ_LOG_LINE_MAX];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int m = vsnprintf(msg, sizeof msg, fmt, ap);
  if (m < 0) msg[0] = 0;
  long long now_ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  size_t len = fq_log_format_line(line, sizeof line, atomic_load(&log_format), now_ms, level & 3,
                                  module, msg, fields, n);
  int fd = atomic_load(&log_fd);
  ssize_t w = write(fd, line, len);
  /* A fatal line also reaches stderr when a file takes the log: whoever
   * started the daemon sees why it stopped. */
  if (fd != STDERR_FILENO && !strcmp(module, "fatal")) w = write(STDERR_FILENO, line, len);
  (void)w;
}

void fq_log(int level, const char *module, const char *fmt, ...) {
  if (level < atomic_load(&min_level)) return;
  va_list ap;
  va_start(ap, fmt);
  log_line(level, module, NULL, 0, fmt, ap);
  va_end(ap);
}

void fq_log_kv(int level, const char *module, const fq_log_field_t *fields, size_t n,
               const char *fmt, ...) {
  if (level < atomic_load(&min_level)) return;
  va_list ap;
  va_start(ap, fmt);
  log_line(level, module, fields, n, fmt, ap);
  va_end(ap);
}

void fq_log_always(int level, const char *module, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_line(level, module, NULL, 0, fmt, ap);
  va_end(ap);
}

void fq_fatal(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_line(FQ_LOG_ERROR, "fatal", NULL, 0, fmt, ap);
  va_end(ap);
  /* _exit, not exit: other threads are still running, and atexit handlers
   * or stdio clean-up would race with them (see log.h). */
  _exit(FQ_FATAL_STATUS);
}
