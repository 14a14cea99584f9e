/*
 * Unit tests of the device lists of `fleetq campaign start`
 * (tools/fleetq/campaign_devs.c): CSV and JSON reading with the file and
 * line of each refusal, the duplicate check, the 100,000 limit, and the
 * split into requests that each fit the 256 KiB body limit, read back
 * through the client's reply reader: every device exactly once, in order,
 * with part / parts right and the same fields in every part.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "campaign_devs.h"
#include "fleetq/client.h"
#include "fq_test.h"

static int parse(const char *text, int fmt, const char *dflt, fq_camp_devs_t *d, fq_err_t *e) {
  memset(d, 0, sizeof *d);
  fq_err_clear(e);
  return fq_camp_parse(text, strlen(text), fmt, dflt, "devs", d, e);
}

static void make_vin(char *out, size_t i) { snprintf(out, 18, "5YJ3E1EA7KF%06zu", i); }

FQ_TEST(csv_reads_vins_sites_and_default_account) {
  fq_camp_devs_t d;
  fq_err_t e;
  const char *csv = "\xEF\xBB\xBF"
                    "VIN , Site,account,color\r\n"
                    "5yj3e1ea7kf000001,,acct-1,red\r\n"
                    "\r\n"
                    ",42,,blue\n"
                    "\"5YJ3E1EA7KF000002\",, \"acct,2\" \n"
                    "5YJ3E1EA7KF000003,,\"a\"\"b\"\n";
  CHECK_INT(parse(csv, FQ_CAMP_FMT_AUTO, "dflt", &d, &e), 0);
  CHECK_INT((int)d.n, 4);
  CHECK_STR(d.v[0].vin, "5YJ3E1EA7KF000001");
  CHECK_STR(d.v[0].account, "acct-1");
  CHECK_INT((int)d.v[0].line, 2);
  CHECK_STR(d.v[1].vin, "");
  CHECK_INT((int)d.v[1].site, 42);
  CHECK_STR(d.v[1].account, "dflt");
  CHECK_INT((int)d.v[1].line, 4);
  CHECK_STR(d.v[2].account, "acct,2");
  CHECK_STR(d.v[3].account, "a\"b");
  fq_camp_devs_free(&d);
}

FQ_TEST(csv_errors_name_the_line) {
  fq_camp_devs_t d;
  fq_err_t e;
  CHECK_INT(parse("vin,account\n5YJ3E1EA7KF000001,a\n5YJ3E1EA7KF00002,a\n", 0, NULL, &d, &e),
            FQ_EBADPARAM);
  CHECK(strstr(e.msg, "devs:3: bad VIN '5YJ3E1EA7KF00002': 16 characters") != NULL);
  fq_camp_devs_free(&d);
  CHECK_INT(parse("vin,account\n5YJ3E1EA7KF00000I,a\n", 0, NULL, &d, &e), FQ_EBADPARAM);
  CHECK(strstr(e.msg, "devs:2: bad VIN") && strstr(e.msg, "character 17"));
  fq_camp_devs_free(&d);
  CHECK_INT(parse("vin,account\n5YJ3E1EA7KF000001,a\n5YJ3E1EA7KF000002,\n", 0, NULL, &d, &e),
            FQ_EBADPARAM);
  CHECK(strstr(e.msg, "devs:3: missing account") != NULL);
  fq_camp_devs_free(&d);
  CHECK_INT(parse("vin\n5YJ3E1EA7KF000001\n", 0, NULL, &d, &e), FQ_EBADPARAM);
  CHECK(strstr(e.msg, "devs:1: no 'account' column and no --account") != NULL);
  fq_camp_devs_free(&d);
  CHECK_INT(parse("vin\n5YJ3E1EA7KF000001\n", 0, "a", &d, &e), 0);
  fq_camp_devs_free(&d);
  CHECK_INT(parse("car,account\n5YJ3E1EA7KF000001,a\n", 0, NULL, &d, &e), FQ_EBADPARAM);
  CHECK(strstr(e.msg, "devs:1: the header line names no 'vin' or 'site'") != NULL);
  fq_camp_devs_free(&d);
  CHECK_INT(parse("vin,site,account\n5YJ3E1EA7KF000001,7,a\n", 0, NULL, &d, &e), FQ_EBADPARAM);
  CHECK(strstr(e.msg, "devs:2: both vin and site") != NULL);
  fq_camp_devs_free(&d);
  CHECK_INT(parse("site,account\n-4,a\n", 0, NULL, &d, &e), FQ_EBADPARAM);
  CHECK(strstr(e.msg, "devs:2: bad site '-4'") != NULL);
  fq_camp_devs_free(&d);
  CHECK_INT(parse("vin,account\n\"5YJ3E1EA7KF000001,a\n", 0, NULL, &d, &e), FQ_EBADPARAM);
  CHECK(strstr(e.msg, "devs:2: unterminated quote") != NULL);
  fq_camp_devs_free(&d);
  CHECK_INT(parse("vin,account\n\n", 0, NULL, &d, &e), FQ_EBADPARAM);
  CHECK(strstr(e.msg, "devs: no devices") != NULL);
  fq_camp_devs_free(&d);
  CHECK_INT(parse("", FQ_CAMP_FMT_CSV, NULL, &d, &e), FQ_EBADPARAM);
  fq_camp_devs_free(&d);
}

FQ_TEST(duplicates_name_both_lines) {
  fq_camp_devs_t d;
  fq_err_t e;
  CHECK_INT(parse("vin,site,account\n5YJ3E1EA7KF000001,,a\n,9,a\n5YJ3E1EA7KF000002,,a\n"
                  ",9,b\n5yj3e1ea7kf000001,,c\n",
                  0, NULL, &d, &e),
            FQ_EBADPARAM);
  CHECK_STR(e.msg, "devs:5: duplicate device: site 9 is already on line 3");
  fq_camp_devs_free(&d);
  CHECK_INT(parse("[{\"vin\": \"5YJ3E1EA7KF000001\", \"account\": \"a\"},\n"
                  " {\"vin\": \"5YJ3E1EA7KF000001\", \"account\": \"b\"}]",
                  0, NULL, &d, &e),
            FQ_EBADPARAM);
  CHECK_STR(e.msg, "devs:2: duplicate device: VIN 5YJ3E1EA7KF000001 is already on line 1");
  fq_camp_devs_free(&d);
}

FQ_TEST(json_reads_and_names_the_element_line) {
  fq_camp_devs_t d;
  fq_err_t e;
  const char *js = "  [\n"
                   "  {\"vin\": \"5YJ3E1EA7KF000001\", \"account\": \"a\", \"note\": \"[x,{\"},\n"
                   "  {\"site\": 77},\n"
                   "  {\"site\": \"78\", \"account\": \"b\"}\n"
                   "]\n";
  CHECK_INT(parse(js, FQ_CAMP_FMT_AUTO, "d", &d, &e), 0);
  CHECK_INT((int)d.n, 3);
  CHECK_STR(d.v[0].account, "a");
  CHECK_INT((int)d.v[1].site, 77);
  CHECK_STR(d.v[1].account, "d");
  CHECK_INT((int)d.v[1].line, 3);
  CHECK_INT((int)d.v[2].site, 78);
  fq_camp_devs_free(&d);
  const char *bad = "[\n {\"vin\": \"5YJ3E1EA7KF000001\", \"account\": \"a\"},\n"
                    " {\"vin\": \"5YJ3E1EA7KF000002\", \"account\": \"a\"},\n"
                    " {\"vin\": \"5YJ3E1EA7KF000003\"}\n]";
  CHECK_INT(parse(bad, FQ_CAMP_FMT_JSON, NULL, &d, &e), FQ_EBADPARAM);
  CHECK(strstr(e.msg, "devs:4: missing account") != NULL);
  fq_camp_devs_free(&d);
  CHECK_INT(parse("[{\"vin\": 5}]", 0, NULL, &d, &e), FQ_EBADPARAM);
  CHECK(strstr(e.msg, "devs:1: \"vin\" of element 1 is not a string") != NULL);
  fq_camp_devs_free(&d);
  CHECK_INT(parse("[1]", 0, NULL, &d, &e), FQ_EBADPARAM);
  CHECK(strstr(e.msg, "element 1 is not an object") != NULL);
  fq_camp_devs_free(&d);
  CHECK_INT(parse("[\n{\"vin\": \"x\",}\n]", 0, NULL, &d, &e), FQ_EBADPARAM);
  CHECK(strstr(e.msg, "devs:2:") && strstr(e.msg, "not valid JSON"));
  fq_camp_devs_free(&d);
  CHECK_INT(parse("{\"vin\": \"5YJ3E1EA7KF000001\"}", FQ_CAMP_FMT_JSON, "a", &d, &e),
            FQ_EBADPARAM);
  CHECK(strstr(e.msg, "want a JSON array") != NULL);
  fq_camp_devs_free(&d);
  CHECK_INT(parse("[]", 0, "a", &d, &e), FQ_EBADPARAM);
  CHECK(strstr(e.msg, "no devices") != NULL);
  fq_camp_devs_free(&d);
}

FQ_TEST(format_of_the_file_name) {
  CHECK_INT(fq_camp_format_of("cars.CSV"), FQ_CAMP_FMT_CSV);
  CHECK_INT(fq_camp_format_of("/x/cars.json"), FQ_CAMP_FMT_JSON);
  CHECK_INT(fq_camp_format_of("-"), FQ_CAMP_FMT_AUTO);
  CHECK_INT(fq_camp_format_of("cars.txt"), FQ_CAMP_FMT_AUTO);
}

static char *make_csv(size_t n) {
  size_t cap = 64 + n * 40;
  char *s = malloc(cap);
  size_t k = (size_t)snprintf(s, cap, "vin,account\n");
  for (size_t i = 0; i < n; i++) {
    char v[18];
    make_vin(v, i);
    k += (size_t)snprintf(s + k, cap - k, "%s,acct-%zu\n", v, i % 7);
  }
  return s;
}

FQ_TEST(over_100000_devices_refused) {
  fq_camp_devs_t d;
  fq_err_t e;
  char *csv = make_csv(FQ_CAMP_MAX_DEVICES + 1);
  CHECK_INT(parse(csv, 0, NULL, &d, &e), FQ_EBADPARAM);
  CHECK(strstr(e.msg, "at most 100000") != NULL);
  fq_camp_devs_free(&d);
  free(csv);
}

/* Split n devices, build every part and read them back. */
static void split_and_check(size_t n, size_t max_bytes, size_t want_parts) {
  fq_camp_devs_t d;
  fq_err_t e;
  char *csv = make_csv(n);
  CHECK_INT(parse(csv, 0, NULL, &d, &e), 0);
  free(csv);
  CHECK_INT((int)d.n, (int)n);
  uint8_t pm[] = {0x81, 0xa7, 'p', 'e', 'r', 'c', 'e', 'n', 't', 0x50};
  fq_camp_req_t r = {.tenant = "acme", .key = "grid-1", .command = "set_charge_limit",
                     .params = pm, .params_len = sizeof pm, .ttl_ms = 600000, .rate = 500,
                     .has_max_failure_ratio = true, .max_failure_ratio = 0.25,
                     .not_before = 1795920000000};
  size_t *starts = NULL, np = 0;
  CHECK_INT(fq_camp_split(&r, &d, max_bytes, &starts, &np, &e), 0);
  if (want_parts) CHECK_INT((int)np, (int)want_parts);
  CHECK_INT((int)starts[0], 0);
  CHECK_INT((int)starts[np], (int)n);
  size_t next = 0;
  for (size_t p = 0; p < np; p++) {
    fq_buf_t b;
    fq_buf_init(&b, max_bytes);
    CHECK_INT(fq_camp_build(&b, &r, &d, starts[p], starts[p + 1], p + 1, np, true, 7), 0);
    CHECK(b.len <= max_bytes);
    fq_msg_t m;
    CHECK_INT(fq_msg_decode(&m, b.data, b.len, &e), 0);
    int64_t v = 0;
    CHECK(fq_mp_str_eq(fq_mp_get(m.root, "op"), "campaign"));
    CHECK(fq_mp_str_eq(fq_mp_get(m.root, "key"), "grid-1"));
    CHECK(fq_mp_int(fq_mp_get(fq_mp_get(m.root, "params"), "percent"), &v) && v == 80);
    CHECK(fq_mp_int(fq_mp_get(m.root, "rate"), &v) && v == 500);
    CHECK(fq_mp_int(fq_mp_get(m.root, "not_before"), &v) && v == 1795920000000);
    CHECK(fq_mp_get(m.root, "max_failure_ratio")->via.f64 == 0.25);
    if (np > 1) {
      CHECK(fq_mp_int(fq_mp_get(m.root, "part"), &v) && v == (int64_t)p + 1);
      CHECK(fq_mp_int(fq_mp_get(m.root, "parts"), &v) && v == (int64_t)np);
    } else {
      CHECK(fq_mp_get(m.root, "part") == NULL && fq_mp_get(m.root, "parts") == NULL);
    }
    const msgpack_object *devs = fq_mp_get(m.root, "devices");
    CHECK(devs && devs->type == MSGPACK_OBJECT_ARRAY && devs->via.array.size > 0);
    for (uint32_t i = 0; i < devs->via.array.size; i++, next++) {
      char vin[18], acct[16];
      make_vin(vin, next);
      snprintf(acct, sizeof acct, "acct-%zu", next % 7);
      CHECK(fq_mp_str_eq(fq_mp_get(&devs->via.array.ptr[i], "vin"), vin));
      CHECK(fq_mp_str_eq(fq_mp_get(&devs->via.array.ptr[i], "account"), acct));
    }
    /* Parts are filled: the next device would not have fitted. */
    if (p + 1 < np) CHECK(b.len + 40 > max_bytes - 64);
    fq_msg_free(&m);
    fq_buf_free(&b);
  }
  CHECK_INT((int)next, (int)n);
  free(starts);
  fq_camp_devs_free(&d);
}

FQ_TEST(split_small_list_is_one_part) { split_and_check(100, FQ_CAMP_BODY_LIMIT, 1); }

FQ_TEST(split_8000_devices_needs_two_parts) { split_and_check(8000, FQ_CAMP_BODY_LIMIT, 2); }

FQ_TEST(split_100000_devices) { split_and_check(100000, FQ_CAMP_BODY_LIMIT, 0); }

FQ_TEST(split_tiny_limit_refused_when_one_device_cannot_fit) {
  fq_camp_devs_t d;
  fq_err_t e;
  CHECK_INT(parse("vin,account\n5YJ3E1EA7KF000001,a\n", 0, NULL, &d, &e), 0);
  fq_camp_req_t r = {.tenant = "acme", .key = "k", .command = "flash_lights"};
  size_t *starts = NULL, np = 0;
  CHECK_INT(fq_camp_split(&r, &d, 100, &starts, &np, &e), FQ_ETOOLARGE);
  CHECK(starts == NULL);
  CHECK_INT(fq_camp_split(&r, &d, 200, &starts, &np, &e), 0);
  CHECK_INT((int)np, 1);
  free(starts);
  fq_camp_devs_free(&d);
}

FQ_TEST(params_pack_from_json) {
  fq_buf_t store, out;
  fq_buf_init(&store, 4096);
  fq_buf_init(&out, 4096);
  fq_pval_t pv[FQ_MAX_PARAMS];
  size_t n = 0;
  fq_err_t e;
  CHECK_INT(fq_params_from_json("{\"percent\": 80, \"on\": true, \"name\": \"x\", \"t\": {\"a\": 1}}",
                                &store, pv, FQ_MAX_PARAMS, &n, &e),
            0);
  CHECK_INT(fq_camp_pack_params(&out, pv, n), 0);
  fq_buf_t js;
  fq_buf_init(&js, 4096);
  CHECK_INT(fq_msgpack_to_json(out.data, out.len, &js, 0), 0);
  CHECK_MEM(js.data, js.len, "{\"percent\":80,\"on\":true,\"name\":\"x\",\"t\":{\"a\":1}}",
            strlen("{\"percent\":80,\"on\":true,\"name\":\"x\",\"t\":{\"a\":1}}"));
  fq_buf_free(&js);
  fq_buf_free(&store);
  fq_buf_free(&out);
}
