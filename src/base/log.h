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

#endif
