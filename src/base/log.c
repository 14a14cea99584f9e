/*
 * Implementation of the log lines described in log.h.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int min_level = FQ_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void fq_log_set_level(int level) { min_level = level; }

int fq_log_parse_level(const char *s) {
  for (int i = 0; i < 4; i++)
    if (strcmp(s, level_names[i]) == 0) return i;
  return -1;
}

/* Format one line (timestamp, level, module, message, newline) and write
 * it with a single write(2), so that lines of several threads never mix. */
__attribute__((format(printf, 3, 0))) static void log_line(int level, const char *module,
                                                           const char *fmt, va_list ap) {
  char line[1024];
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s: ",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                   tm.tm_sec, ts.tv_nsec / 1000000, level_names[level & 3], module);
  if (n < 0) return;
  int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
  if (len > sizeof line - 2) len = sizeof line - 2;
  line[len++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, len);
  (void)w;
}

void fq_log(int level, const char *module, const char *fmt, ...) {
  if (level < min_level) return;
  va_list ap;
  va_start(ap, fmt);
  log_line(level, module, fmt, ap);
  va_end(ap);
}

void fq_fatal(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_line(FQ_LOG_ERROR, "fatal", fmt, ap);
  va_end(ap);
  /* _exit, not exit: other threads are still running, and atexit handlers
   * or stdio clean-up would race with them (see log.h). */
  _exit(FQ_FATAL_STATUS);
}
