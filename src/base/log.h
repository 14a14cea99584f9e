/*
 * Logging: one line per event on stderr, with a level, a monotonic-safe
 * wall-clock timestamp and the calling module.  Thread safe (each line is a
 * single write(2)).  Never pass secrets (tokens, keys, Authorization
 * headers) to these functions: nothing here can redact them.
 */
#ifndef FQ_LOG_H
#define FQ_LOG_H

enum fq_log_level { FQ_LOG_DEBUG = 0, FQ_LOG_INFO, FQ_LOG_WARN, FQ_LOG_ERROR };

/* Set the lowest level printed (default FQ_LOG_INFO); not thread safe:
 * call before starting threads. */
void fq_log_set_level(int level);
/* Parse "debug" / "info" / "warn" / "error"; returns -1 when unknown. */
int fq_log_parse_level(const char *s);

void fq_log(int level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define fq_debug(mod, ...) fq_log(FQ_LOG_DEBUG, mod, __VA_ARGS__)
#define fq_info(mod, ...) fq_log(FQ_LOG_INFO, mod, __VA_ARGS__)
#define fq_warn(mod, ...) fq_log(FQ_LOG_WARN, mod, __VA_ARGS__)
#define fq_error(mod, ...) fq_log(FQ_LOG_ERROR, mod, __VA_ARGS__)

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
