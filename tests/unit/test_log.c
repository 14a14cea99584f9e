/*
 * Unit tests of log.c: JSON lines are valid JSON whatever the message and
 * fields hold (quotes, backslashes, control bytes, invalid UTF-8, lines
 * longer than the buffer), text lines stay one line, timestamps are RFC
 * 3339 UTC with milliseconds, and the log file is appended to, private,
 * and reopened under the same descriptor.
 */
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fq_test.h"
#include "log.h"

/* 2026-12-04T15:04:05.678Z */
#define T0 1796396645678LL

static json_t *parse_line(const char *line, size_t len) {
  CHECK(len > 0 && line[len - 1] == '\n');
  CHECK(memchr(line, '\n', len - 1) == NULL);
  json_error_t je;
  json_t *j = json_loadb(line, len - 1, 0, &je);
  if (!j) FQ__FAIL("not JSON (%s): %.*s", je.text, (int)len, line);
  return j;
}

static const char *sget(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  return json_is_string(v) ? json_string_value(v) : NULL;
}

FQ_TEST(json_line_has_ts_level_module_msg_and_fields) {
  char line[FQ_LOG_LINE_MAX];
  fq_log_field_t f[] = {{"id", "0100000000000001"}, {"tenant", "acme"}, {"skip", NULL}};
  size_t n = fq_log_format_line(line, sizeof line, FQ_LOG_JSON, T0, FQ_LOG_WARN, "shard",
                                "command ended", f, 3);
  json_t *j = parse_line(line, n);
  CHECK_STR(sget(j, "ts"), "2026-12-04T15:04:05.678Z");
  CHECK_STR(sget(j, "level"), "warn");
  CHECK_STR(sget(j, "module"), "shard");
  CHECK_STR(sget(j, "msg"), "command ended");
  CHECK_STR(sget(j, "id"), "0100000000000001");
  CHECK_STR(sget(j, "tenant"), "acme");
  CHECK(json_object_get(j, "skip") == NULL);
  json_decref(j);
}

FQ_TEST(json_escapes_quotes_controls_and_bad_utf8) {
  char line[FQ_LOG_LINE_MAX];
  /* quote, backslash, newline, tab, BEL, DEL, a valid é, a lone 0xff, a
   * truncated 3-byte sequence, an overlong '/', a surrogate. */
  const char *msg = "a\"b\\c\nd\te\x07f\x7fg\xc3\xa9h\xffi\xe2\x82j\xc0\xafk\xed\xa0\x80l";
  fq_log_field_t f[] = {{"reason", "x\"\n\x01\xfe"}};
  size_t n = fq_log_format_line(line, sizeof line, FQ_LOG_JSON, T0, FQ_LOG_INFO, "m\"od", msg,
                                f, 1);
  json_t *j = parse_line(line, n);
  CHECK_STR(sget(j, "msg"), "a\"b\\c\nd\te\x07f\x7fg\xc3\xa9h\xef\xbf\xbdi\xef\xbf\xbd\xef\xbf\xbdj"
                            "\xef\xbf\xbd\xef\xbf\xbdk\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdl");
  CHECK_STR(sget(j, "module"), "m\"od");
  CHECK_STR(sget(j, "reason"), "x\"\n\x01\xef\xbf\xbd");
  json_decref(j);
}

FQ_TEST(json_long_lines_are_cut_and_stay_valid) {
  char msg[3000], val[3000], line[FQ_LOG_LINE_MAX];
  /* Escapes that expand six-fold, so that the cut falls inside them. */
  for (size_t cut = 0; cut < 7; cut++) {
    memset(msg, '\x01', sizeof msg);
    msg[sizeof msg - 1] = 0;
    memset(val, '"', sizeof val);
    val[sizeof val - 1] = 0;
    for (size_t i = 0; i < cut; i++) msg[i] = 'a';
    fq_log_field_t f[] = {{"a", "short"}, {"b", val}, {"c", "after"}};
    size_t n = fq_log_format_line(line, sizeof line, FQ_LOG_JSON, T0, FQ_LOG_INFO, "x", msg, f,
                                  3);
    CHECK(n <= sizeof line);
    json_t *j = parse_line(line, n);
    CHECK(sget(j, "msg") != NULL);
    CHECK_STR(sget(j, "a"), "short");
    json_decref(j);
  }
  /* A small buffer too. */
  char small[256];
  size_t n = fq_log_format_line(small, sizeof small, FQ_LOG_JSON, T0, FQ_LOG_INFO, "x", msg,
                                NULL, 0);
  json_decref(parse_line(small, n));
}

FQ_TEST(text_line_is_one_line_with_key_value_fields) {
  char line[FQ_LOG_LINE_MAX];
  fq_log_field_t f[] = {{"id", "01"}, {"reason", "key not paired: \"x\"\n"}, {"e", ""}};
  size_t n = fq_log_format_line(line, sizeof line, FQ_LOG_TEXT, T0, FQ_LOG_INFO, "shard",
                                "two\nlines", f, 3);
  line[n] = 0;
  CHECK_STR(line, "2026-12-04T15:04:05.678Z info  shard: two\\nlines id=01 "
                  "reason=\"key not paired: \\\"x\\\"\\n\" e=\"\"\n");
}

FQ_TEST(levels_and_formats_parse) {
  CHECK_INT(fq_log_parse_level("warn"), FQ_LOG_WARN);
  CHECK_INT(fq_log_parse_level("loud"), -1);
  CHECK_INT(fq_log_parse_format("json"), FQ_LOG_JSON);
  CHECK_INT(fq_log_parse_format("text"), FQ_LOG_TEXT);
  CHECK_INT(fq_log_parse_format("xml"), -1);
  CHECK_STR(fq_log_level_name(FQ_LOG_ERROR), "error");
}

static char *slurp(const char *path) {
  static char buf[8192];
  int fd = open(path, O_RDONLY);
  if (fd < 0) return NULL;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  buf[n < 0 ? 0 : n] = 0;
  return buf;
}

FQ_TEST(log_file_appends_is_private_and_reopens) {
  char dir[] = "/tmp/fq-log-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char path[256], old[256];
  snprintf(path, sizeof path, "%s/fleetqd.log", dir);
  snprintf(old, sizeof old, "%s/fleetqd.log.1", dir);
  int fd = open(path, O_WRONLY | O_CREAT, 0600);
  CHECK(fd >= 0);
  CHECK_INT(write(fd, "before\n", 7), 7);
  close(fd);
  unlink(path);
  umask(022);
  fq_err_t err;
  fq_err_clear(&err);
  CHECK_INT(fq_log_open(path, &err), 0);
  fq_log_set_format(FQ_LOG_TEXT);
  fq_info("test", "first");
  struct stat st;
  CHECK_INT(stat(path, &st), 0);
  CHECK_INT(st.st_mode & 0777, 0640);
  CHECK_INT(rename(path, old), 0);
  fq_info("test", "second");   /* still the renamed file */
  CHECK_INT(fq_log_reopen(&err), 0);
  fq_info("test", "third");    /* the new file */
  char *a = slurp(old);
  CHECK(a && strstr(a, "first") && strstr(a, "second") && !strstr(a, "third"));
  char *b = slurp(path);
  CHECK(b && strstr(b, "third") && !strstr(b, "second"));
  /* Appending: lines written before reopening stay. */
  fq_info("test", "fourth");
  b = slurp(path);
  CHECK(b && strstr(b, "third") && strstr(b, "fourth"));
  fq_err_clear(&err);
  CHECK(fq_log_open("/nonexistent-dir/x.log", &err) == FQ_ECONFIG);
  CHECK(strstr(err.msg, "/nonexistent-dir/x.log") != NULL);
  unlink(path);
  unlink(old);
  rmdir(dir);
}
