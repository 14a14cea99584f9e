/*
 * The device list of `fleetq campaign start` (issue 16): read from a CSV
 * or JSON file, checked row by row with messages that name the file and
 * line, and split into `campaign` requests ("part": i, "parts": n) that
 * each fit fleetqd's request body limit.  No I/O on sockets here, so the
 * unit test (tests/unit/test_campaign_devs.c) checks it alone.
 *
 * Formats:
 *   CSV   a header line naming the columns: `vin` or `site` (or both, one
 *         of the two set per row), and `account` (optional when a default
 *         account is given); other columns are ignored.  Fields may be
 *         quoted ("a,b", "" for a quote); blank lines are skipped.
 *   JSON  an array of objects {"vin": "..."} or {"site": 123 | "123"},
 *         each with "account" (optional with a default); other keys are
 *         ignored.
 * VINs are upper-cased, then must be 17 characters of A-H J-N P R-Z 0-9;
 * a device listed twice is refused naming both lines.
 */
#ifndef FQ_CAMPAIGN_DEVS_H
#define FQ_CAMPAIGN_DEVS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleetq/buf.h"
#include "fleetq/commands.h"
#include "fleetq/error.h"

/* The contract's limits (proto/wire-protocol.md, campaign). */
#define FQ_CAMP_MAX_DEVICES 100000
#define FQ_CAMP_MAX_PARTS 1000
#define FQ_CAMP_MAX_KEY 100
#define FQ_CAMP_MAX_ACCOUNT 128
/* fleetqd's request body limit (FQ_WIRE_MAX_MSG). */
#define FQ_CAMP_BODY_LIMIT (256 * 1024)

typedef struct fq_camp_dev {
  char vin[18];                      /* "" for an energy site */
  uint64_t site;                     /* 0 for a vehicle */
  char account[FQ_CAMP_MAX_ACCOUNT + 1];
  uint32_t line;                     /* 1-based line in the source */
} fq_camp_dev_t;

typedef struct fq_camp_devs {
  fq_camp_dev_t *v;
  size_t n, cap;
} fq_camp_devs_t;

enum { FQ_CAMP_FMT_AUTO = 0, FQ_CAMP_FMT_CSV, FQ_CAMP_FMT_JSON };

/* The format a file name implies: ".csv" -> CSV, ".json" -> JSON, else
 * FQ_CAMP_FMT_AUTO. */
int fq_camp_format_of(const char *path);

/* Parse text (len bytes) holding a device list in format fmt (AUTO: JSON
 * when the first non-blank character is '[', else CSV).  default_account
 * (NULL: none) fills rows without one.  name ("devices.csv", "-") prefixes
 * every message: "<name>:<line>: <what is wrong>".  Appends to out (which
 * starts zeroed).  Returns 0, FQ_EBADPARAM (a bad row, a duplicate device,
 * an empty list, more than FQ_CAMP_MAX_DEVICES) or -ENOMEM. */
int fq_camp_parse(const char *text, size_t len, int fmt, const char *default_account,
                  const char *name, fq_camp_devs_t *out, fq_err_t *err);
void fq_camp_devs_free(fq_camp_devs_t *d);

/* What every part of a campaign repeats. */
typedef struct fq_camp_req {
  const char *tenant, *key, *command;
  const uint8_t *params;   /* a msgpack map, or NULL */
  size_t params_len;
  int64_t ttl_ms;          /* 0: not sent */
  double rate;             /* 0: not sent */
  bool has_max_failure_ratio;
  double max_failure_ratio;
  int64_t not_before;      /* unix ms; 0: not sent */
} fq_camp_req_t;

/* Split devices [0, d->n) into consecutive parts whose requests are each
 * at most max_bytes: starts[i] is the first device of part i + 1 and
 * starts[*nparts] == d->n (starts is malloc'ed, *nparts + 1 entries; free
 * it).  Returns 0, FQ_ETOOLARGE (one device with the header does not fit,
 * or more than FQ_CAMP_MAX_PARTS parts) or -ENOMEM. */
int fq_camp_split(const fq_camp_req_t *r, const fq_camp_devs_t *d, size_t max_bytes,
                  size_t **starts, size_t *nparts, fq_err_t *err);

/* Append the `campaign` request of devices [from, to) to out: part and
 * parts are sent when parts > 1.  has_req adds `req`.  Returns 0,
 * FQ_ETOOLARGE (out's cap) or -ENOMEM. */
int fq_camp_build(fq_buf_t *out, const fq_camp_req_t *r, const fq_camp_devs_t *d, size_t from,
                  size_t to, size_t part, size_t parts, bool has_req, int64_t req);

/* Pack parameters (fq_params_from_json's output) as one msgpack map into
 * out.  Returns 0, FQ_ETOOLARGE or -ENOMEM. */
int fq_camp_pack_params(fq_buf_t *out, const fq_pval_t *pv, size_t n);

#endif
