/*
 * Logging: one line per event, with a level, a wall-clock timestamp (RFC
 * 3339, UTC, milliseconds) and the calling module, on stderr or in a log
 * file (fq_log_open), as text or as one JSON object per line
 * (fq_log_set_format).  Thread safe: each line is formatted on the stack
 * and written with a single write(2), so lines of several threads never
 * mix, and the level, the format and the file may change while other
 * threads log (SIGHUP).  Never pass secrets (tokens, keys, Authorization
 * headers) to these functions: nothing here can redact them.
 *
 * Lines are bounded (FQ_LOG_LINE_MAX): a longer message is cut, never at
 * the middle of a character escape, and a JSON line is always a complete,
 * valid object.  Whatever the bytes of the message and fields (quotes,
 * control bytes, invalid UTF-8), the text format escapes control bytes
 * (\n, \xNN) so one event stays one line, and the JSON format escapes
 * them and replaces bytes that are not UTF-8 with U+FFFD.
 */
#ifndef FQ_LOG_H
#define FQ_LOG_H

#include <stddef.h>

#include "fleetq/error.h"

enum fq_log_level { FQ_LOG_DEBUG = 0, FQ_LOG_INFO, FQ_LOG_WARN, FQ_LOG_ERROR };
enum fq_log_format { FQ_LOG_TEXT = 0, FQ_LOG_JSON };

/* The longest line written, newline included. */
#define FQ_LOG_LINE_MAX 4096

/* Set the lowest level printed (default FQ_LOG_INFO).  Thread safe. */
void fq_log_set_level(int level);
/* The level in force. */
int fq_log_get_level(void);
/* Parse "debug" / "info" / "warn" / "error"; returns -1 when unknown. */
int fq_log_parse_level(const char *s);
/* Its name ("info"), "?" when out of range. */
const char *fq_log_level_name(int level);

/* Text (default) or JSON lines.  Thread safe. */
void fq_log_set_format(int format);
/* Parse "text" / "json"; returns -1 when unknown. */
int fq_log_parse_format(const char *s);

/* Write lines to path from now on instead of stderr: opened for
 * appending, created with mode 0640 (less by the umask), close-on-exec.
 * The path is kept for fq_log_reopen.  Call once, before threads start.
 * 0, or FQ_ECONFIG with err naming the file and the cause. */
int fq_log_open(const char *path, fq_err_t *err);

/* Open the log file's path again and write there from now on (logrotate:
 * the old file was renamed, the new one is created).  Lines of other
 * threads go to the old or the new file, never nowhere: the new file
 * replaces the old one's descriptor in one dup2(2).  Thread safe.  0 when
 * done or when no file is in use; FQ_ECONFIG (the old file stays in use)
 * with err filled. */
int fq_log_reopen(fq_err_t *err);

/* One structured field of a line: a key (letters, digits, '_') and a
 * string value (NULL: the field is left out).  Text: ` key=value`, the
 * value quoted when it holds a space, '"', '=' or a control byte; JSON: a
 * member "key":"value" after msg. */
typedef struct fq_log_field {
  const char *key;
  const char *val;
} fq_log_field_t;

void fq_log(int level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* fq_log with fields (fields may be NULL when n is 0). */
void fq_log_kv(int level, const char *module, const fq_log_field_t *fields, size_t n,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* fq_log whatever the level set: for the few lines a supervisor waits
 * for ("fleetqd: ready"). */
void fq_log_always(int level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define fq_debug(mod, ...) fq_log(FQ_LOG_DEBUG, mod, __VA_ARGS__)
#define fq_info(mod, ...) fq_log(FQ_LOG_INFO, mod, __VA_ARGS__)
#define fq_warn(mod, ...) fq_log(FQ_LOG_WARN, mod, __VA_ARGS__)
#define fq_error(mod, ...) fq_log(FQ_LOG_ERROR, mod, __VA_ARGS__)

/* Format one line into out (at most cap bytes, cap >= 256; newline
 * included, no NUL) as the logger would write it at wall-clock time
 * now_ms; returns its length.  For tests; thread safe. */
size_t fq_log_format_line(char *out, size_t cap, int format, long long now_ms, int level,
                          const char *module, const char *msg, const fq_log_field_t *fields,
                          size_t n);

/* FQ_FATAL_STATUS is the exit status of fq_fatal(): EX_SOFTWARE from
 * <sysexits.h>, "internal software error". */
#define FQ_FATAL_STATUS 70

/* Stop the whole process at once: log the message at error level (module
 * "fatal", printed whatever fq_log_set_level() chose) and end the process
 * with status FQ_FATAL_STATUS.  Never returns.
 *
 * Safe from any thread: it ends with _exit(2), so no atexit handler, no
 * stdio flush and no destructor runs while other threads still use what
 * they would tear down, and the line is one write(2) like fq_log().  Open
 * LMDB environments need no clean-up: a commit is durable once it has
 * returned, and the next start clears stale reader slots.
 *
 * Legitimate only when no safe state is left to go on from:
 *   - the disk stopped taking writes (a failed commit: acknowledging more
 *     requests would promise what is not durable), MDB_PANIC, or data
 *     read back corrupt;
 *   - a programmer error detected at run time that leaves memory or a
 *     protocol stream in an unknown state (a batch that cannot be framed).
 * Never for expected runtime conditions: a full disk map, a bad request, a
 * peer that went away, an unreachable Fleet API, out of memory while
 * serving one request, or any start-up failure.  Those return an error
 * code and message (fq_err_t) to the caller, who answers, retries or
 * exits cleanly; creation functions (fq_shard_new, fq_dispatch_new, ...)
 * run in the caller's thread precisely so that they can. */
_Noreturn void fq_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
