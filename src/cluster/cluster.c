/*
 * fq_cluster over the NATS C client (libnats).  See cluster.h for the
 * contract and docs/cluster.md for why each setting is what it is.
 */
#include "cluster.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nats/nats.h>

#include "util.h"

#define LEASE_BUCKET "FQ_LEASES"
#define LEASE_STREAM "KV_" LEASE_BUCKET
#define NS_PER_MS INT64_C(1000000)
/* JetStream's duplicate window on the logs: a retried append finds its
 * first attempt by msg id within it (and by reading the sequence after). */
#define DUP_WINDOW_MS (2 * 60 * 1000)
#define URLS_MAX 16
#define VALUE_MAX 320

struct fq_cl {
  fq_cl_opts_t o;
  char node[33];
  natsConnection *nc;
  jsCtx *js;
  kvStore *kv;             /* the lease bucket, once ensured */
  uint64_t nonce;          /* lease writes made (see lease_value) */
};

struct fq_cl_follow {
  fq_cl_t *c;
  unsigned shard;
  natsSubscription *sub;   /* NULL after a failed resubscription */
  uint64_t pos;            /* last sequence delivered */
  uint64_t resubs;         /* consumers made again (fq_cl_follow_next) */
  uint64_t repeats;        /* messages delivered again and dropped */
};

const char *fq_cl_strerror(int code) {
  switch (code) {
  case FQ_CL_EFENCED: return "fenced: another node appended to the shard's log";
  case FQ_CL_EUNAVAIL: return "cluster unavailable (no answer, no quorum or no connection)";
  case FQ_CL_ELEASE: return "the lease is held by another node";
  default: return fq_strerror(code);
  }
}

void fq_cl_opts_init(fq_cl_opts_t *o) {
  memset(o, 0, sizeof *o);
  o->timeout_ms = 2000;
  o->replicas = 3;
  o->lease_ttl_ms = 3000;
  o->stream_max_age_ms = INT64_C(7) * 24 * 3600 * 1000;
  o->max_msg = 8 << 20;
}

/* The text of a NATS failure: the status, the JetStream error code when
 * there is one, and the library's last error of this thread (which names
 * the server's description, e.g. "wrong last sequence: 41"). */
static int nfail(fq_err_t *err, int code, natsStatus s, jsErrCode je, const char *what) {
  natsStatus ls = NATS_OK;
  const char *last = nats_GetLastError(&ls);
  if (je)
    return fq_errf(err, code, "%s: %s (jetstream error %d)%s%s", what, natsStatus_GetText(s),
                   (int)je, last && *last ? ": " : "", last ? last : "");
  return fq_errf(err, code, "%s: %s%s%s", what, natsStatus_GetText(s),
                 last && *last ? ": " : "", last ? last : "");
}

/* A failed request: whether its outcome is a definite refusal or unknown.
 * Timeouts, lost connections and "no responders" (no JetStream leader
 * right now) are unknown: the caller may retry. */
static int status_code(natsStatus s, jsErrCode je) {
  if (je == JSStreamWrongLastSequenceErr) return FQ_CL_EFENCED;
  if (je == JSStorageResourcesExceededErr || je == JSInsufficientResourcesErr)
    return FQ_ESTORFULL;
  (void)s;
  return FQ_CL_EUNAVAIL;
}

static bool node_ok(const char *n) {
  size_t len = n ? strlen(n) : 0;
  if (len < 1 || len > 32) return false;
  for (size_t i = 0; i < len; i++) {
    char ch = n[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
          ch == '-' || ch == '_'))
      return false;
  }
  return true;
}

int fq_cl_connect(const fq_cl_opts_t *o, fq_cl_t **out, fq_err_t *err) {
  *out = NULL;
  if (!o->urls || !*o->urls) return fq_errf(err, FQ_EBADPARAM, "cluster: no NATS URL given");
  if (!node_ok(o->node_id))
    return fq_errf(err, FQ_EBADPARAM, "cluster: node id must be 1..32 of [A-Za-z0-9_-]");
  if (o->timeout_ms < 10 || o->timeout_ms > 60000)
    return fq_errf(err, FQ_EBADPARAM, "cluster: timeout %" PRId64 " ms not in 10..60000",
                   o->timeout_ms);
  if (o->replicas < 1 || o->replicas > 5)
    return fq_errf(err, FQ_EBADPARAM, "cluster: replicas %d not in 1..5", o->replicas);
  if (o->lease_ttl_ms < 300)
    return fq_errf(err, FQ_EBADPARAM, "cluster: lease TTL %" PRId64 " ms below 300",
                   o->lease_ttl_ms);
  if (o->act_ms < 0 || o->act_ms > o->lease_ttl_ms - 100)
    return fq_errf(err, FQ_EBADPARAM, "cluster: act window %" PRId64 " ms not in 0..TTL - 100",
                   o->act_ms);
  if (o->max_msg < 1024 || o->stream_max_age_ms < 1000)
    return fq_errf(err, FQ_EBADPARAM, "cluster: max message or stream age too small");

  /* Split the list: libnats wants an array of URLs. */
  char *copy = strdup(o->urls);
  if (!copy) return fq_errf(err, -ENOMEM, "cluster: out of memory");
  const char *urls[URLS_MAX];
  int nurls = 0;
  for (char *save = NULL, *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    while (*t == ' ') t++;
    if (!*t) continue;
    if (nurls == URLS_MAX) {
      free(copy);
      return fq_errf(err, FQ_EBADPARAM, "cluster: more than %d NATS URLs", URLS_MAX);
    }
    if (strncmp(t, "nats://", 7) != 0) {
      int rc = fq_errf(err, FQ_EBADPARAM, "cluster: NATS URL \"%.64s\" does not start with nats://",
                       t);
      free(copy);
      return rc;
    }
    urls[nurls++] = t;
  }
  if (!nurls) {
    free(copy);
    return fq_errf(err, FQ_EBADPARAM, "cluster: no NATS URL given");
  }

  fq_cl_t *c = calloc(1, sizeof *c);
  if (!c) {
    free(copy);
    return fq_errf(err, -ENOMEM, "cluster: out of memory");
  }
  c->o = *o;
  snprintf(c->node, sizeof c->node, "%s", o->node_id);
  c->o.node_id = c->node;
  c->o.urls = NULL;

  natsOptions *no = NULL;
  char name[64];
  snprintf(name, sizeof name, "fleetq node %s", c->node);
  natsStatus s = natsOptions_Create(&no);
  if (s == NATS_OK) s = natsOptions_SetServers(no, urls, nurls);
  /* The order given is the order tried first: a node lists its nearest
   * server first. */
  if (s == NATS_OK) s = natsOptions_SetNoRandomize(no, true);
  if (s == NATS_OK) s = natsOptions_SetName(no, name);
  if (s == NATS_OK) s = natsOptions_SetTimeout(no, o->timeout_ms);
  /* Reconnect for ever: a node that lost NATS must come back by itself
   * (its leases run out meanwhile, which is what stops it acting). */
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(no, true);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(no, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(no, 250);
  if (s == NATS_OK) s = natsConnection_Connect(&c->nc, no);
  natsOptions_Destroy(no);
  free(copy);
  if (s != NATS_OK) {
    int rc = nfail(err, s == NATS_NO_SERVER || s == NATS_TIMEOUT ? FQ_CL_EUNAVAIL : FQ_EBADPARAM,
                   s, 0, "cluster: connect");
    fq_cl_close(&c);
    return rc;
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = o->timeout_ms;
  if ((s = natsConnection_JetStream(&c->js, c->nc, &jo)) != NATS_OK) {
    int rc = nfail(err, FQ_CL_EUNAVAIL, s, 0, "cluster: JetStream context");
    fq_cl_close(&c);
    return rc;
  }
  *out = c;
  return 0;
}

void fq_cl_close(fq_cl_t **cp) {
  fq_cl_t *c = *cp;
  if (!c) return;
  if (c->kv) kvStore_Destroy(c->kv);
  if (c->js) jsCtx_Destroy(c->js);
  if (c->nc) {
    natsConnection_Close(c->nc);
    natsConnection_Destroy(c->nc);
  }
  free(c);
  *cp = NULL;
}

const char *fq_cl_node(const fq_cl_t *c) { return c->node; }
int64_t fq_cl_lease_ttl_ms(const fq_cl_t *c) { return c->o.lease_ttl_ms; }

void fq_cl_stream_name(unsigned shard, char *buf, size_t n) {
  snprintf(buf, n, "FQ_SHARD_%u", shard);
}
void fq_cl_subject(unsigned shard, char *buf, size_t n) {
  snprintf(buf, n, "fq.shard.%u.log", shard);
}

/* --- streams ---------------------------------------------------------------- */

static int check_stream(const jsStreamInfo *si, const char *name, const char *subject,
                        int replicas, int64_t max_age_ns, fq_err_t *err) {
  const jsStreamConfig *sc = si->Config;
  if (!sc) return fq_errf(err, FQ_EPROTO, "cluster: stream %s: no configuration in its info", name);
  if (subject && (sc->SubjectsLen != 1 || strcmp(sc->Subjects[0], subject) != 0))
    return fq_errf(err, FQ_ECONFIG, "cluster: stream %s exists with other subjects (want only %s)",
                   name, subject);
  if (sc->Replicas != replicas)
    return fq_errf(err, FQ_ECONFIG, "cluster: stream %s has %" PRId64 " replicas, want %d", name,
                   sc->Replicas, replicas);
  if (sc->Storage != js_FileStorage)
    return fq_errf(err, FQ_ECONFIG, "cluster: stream %s is not on file storage", name);
  if (max_age_ns && sc->MaxAge != max_age_ns)
    return fq_errf(err, FQ_ECONFIG,
                   "cluster: stream %s keeps messages %" PRId64 " ms, want %" PRId64 " ms", name,
                   sc->MaxAge / NS_PER_MS, max_age_ns / NS_PER_MS);
  return 0;
}

int fq_cl_ensure_shard(fq_cl_t *c, unsigned shard, fq_err_t *err) {
  char name[32], subject[48];
  fq_cl_stream_name(shard, name, sizeof name);
  fq_cl_subject(shard, subject, sizeof subject);
  jsStreamInfo *si = NULL;
  jsErrCode je = 0;
  natsStatus s = js_GetStreamInfo(&si, c->js, name, NULL, &je);
  if (s == NATS_NOT_FOUND || je == JSStreamNotFoundErr) {
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[1] = {subject};
    sc.Name = name;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Retention = js_LimitsPolicy;
    sc.Discard = js_DiscardOld;
    sc.Storage = js_FileStorage;
    sc.Replicas = c->o.replicas;
    sc.MaxAge = c->o.stream_max_age_ms * NS_PER_MS;
    sc.MaxMsgSize = c->o.max_msg;
    sc.Duplicates = (int64_t)DUP_WINDOW_MS * NS_PER_MS;
    sc.AllowDirect = true;
    je = 0;
    /* Two nodes may create it at once: JetStream accepts the same
     * configuration twice, and the info read below checks what won. */
    s = js_AddStream(&si, c->js, &sc, NULL, &je);
    if (s != NATS_OK) {
      if (si) jsStreamInfo_Destroy(si);
      si = NULL;
      je = 0;
      s = js_GetStreamInfo(&si, c->js, name, NULL, &je);
    }
  }
  if (s != NATS_OK) {
    if (si) jsStreamInfo_Destroy(si);
    return nfail(err, status_code(s, je), s, je, "cluster: shard stream");
  }
  int rc = check_stream(si, name, subject, c->o.replicas, c->o.stream_max_age_ms * NS_PER_MS,
                        err);
  uint64_t last = si->State.LastSeq;
  jsStreamInfo_Destroy(si);
  if (rc || last > 0) return rc;

  /* A new stream: its genesis, once (one msg id for every creator). */
  char msgid[48];
  snprintf(msgid, sizeof msgid, "fq.genesis.%u", shard);
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MsgId = msgid;
  po.MaxWait = c->o.timeout_ms;
  jsPubAck *pa = NULL;
  je = 0;
  s = js_Publish(&pa, c->js, subject, NULL, 0, &po, &je);
  if (s != NATS_OK) return nfail(err, status_code(s, je), s, je, "cluster: genesis append");
  uint64_t seq = pa->Sequence;
  jsPubAck_Destroy(pa);
  if (seq != 1)
    return fq_errf(err, FQ_EPROTO, "cluster: stream %s: genesis got sequence %" PRIu64
                   " (something else wrote to %s)", name, seq, subject);
  return 0;
}

int fq_cl_ensure_leases(fq_cl_t *c, fq_err_t *err) {
  if (c->kv) return 0;
  kvStore *kv = NULL;
  natsStatus s = js_KeyValue(&kv, c->js, LEASE_BUCKET);
  if (s == NATS_NOT_FOUND) {
    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = LEASE_BUCKET;
    kc.Description = "fleetq shard leases (docs/cluster.md)";
    kc.History = 1;
    kc.TTL = c->o.lease_ttl_ms * NS_PER_MS; /* nanoseconds in the C client (3.4) */
    kc.StorageType = js_FileStorage;
    kc.Replicas = c->o.replicas;
    kc.MaxValueSize = VALUE_MAX;
    s = js_CreateKeyValue(&kv, c->js, &kc);
    if (s != NATS_OK) {
      fq_err_t e2;
      nfail(&e2, FQ_CL_EUNAVAIL, s, 0, "cluster: create the lease bucket");
      s = js_KeyValue(&kv, c->js, LEASE_BUCKET); /* a racing creator made it */
      if (s != NATS_OK) {
        *err = e2;
        return e2.code;
      }
    }
  }
  if (s != NATS_OK) return nfail(err, FQ_CL_EUNAVAIL, s, 0, "cluster: lease bucket");
  /* The TTL is the lease: a bucket made with another one would make every
   * node's "may I act" arithmetic wrong. */
  jsStreamInfo *si = NULL;
  jsErrCode je = 0;
  s = js_GetStreamInfo(&si, c->js, LEASE_STREAM, NULL, &je);
  if (s != NATS_OK) {
    kvStore_Destroy(kv);
    return nfail(err, status_code(s, je), s, je, "cluster: lease bucket info");
  }
  int rc = check_stream(si, LEASE_STREAM, NULL, c->o.replicas, c->o.lease_ttl_ms * NS_PER_MS,
                        err);
  jsStreamInfo_Destroy(si);
  if (rc) {
    kvStore_Destroy(kv);
    return rc;
  }
  c->kv = kv;
  return 0;
}

/* --- leases ----------------------------------------------------------------- */

static void lease_key(unsigned shard, char *buf, size_t n) { snprintf(buf, n, "shard.%u", shard); }

/* The value of one lease write: "<node> <endpoint> <nonce>".  The nonce
 * makes every write's value unique, so that "the lease holds exactly what
 * this write put there" proves the write landed: a lagging replica may
 * still show an older value of ours, never this one. */
static int lease_value(fq_cl_t *c, const char *endpoint, char *buf, size_t n, fq_err_t *err) {
  c->nonce++;
  int len = snprintf(buf, n, "%s %s %" PRIx64 ".%" PRIx64, c->node, endpoint ? endpoint : "-",
                     (uint64_t)fq_mono_ns(), c->nonce);
  if (len < 0 || (size_t)len >= n)
    return fq_errf(err, FQ_EBADPARAM, "cluster: endpoint too long for a lease");
  return len;
}

/* Read shard's lease from the bucket stream's leader (the JetStream API,
 * not a direct get: during a leader change a direct get may be answered
 * by a replica that lags, and showed an older revision or none in the
 * tests).  0 with value and revision, FQ_ENOTFOUND (absent, deleted,
 * expired), FQ_CL_EUNAVAIL. */
static int lease_read(fq_cl_t *c, unsigned shard, char *value, size_t n, uint64_t *rev,
                      fq_err_t *err) {
  char subject[64];
  snprintf(subject, sizeof subject, "$KV.%s.shard.%u", LEASE_BUCKET, shard);
  natsMsg *m = NULL;
  jsErrCode je = 0;
  natsStatus s = js_GetLastMsg(&m, c->js, LEASE_STREAM, subject, NULL, &je);
  if (s == NATS_NOT_FOUND || je == JSNoMessageFoundErr)
    return fq_errf(err, FQ_ENOTFOUND, "cluster: nobody holds the lease of shard %u", shard);
  if (s != NATS_OK) return nfail(err, FQ_CL_EUNAVAIL, s, je, "cluster: lease read");
  const char *op = NULL;
  if (natsMsgHeader_Get(m, "KV-Operation", &op) == NATS_OK && op &&
      (!strcmp(op, "DEL") || !strcmp(op, "PURGE"))) {
    natsMsg_Destroy(m);
    return fq_errf(err, FQ_ENOTFOUND, "cluster: nobody holds the lease of shard %u (released)",
                   shard);
  }
  if (value && n) {
    int len = natsMsg_GetDataLength(m);
    size_t k = len > 0 ? (size_t)len : 0;
    if (k >= n) k = n - 1;
    if (k) memcpy(value, natsMsg_GetData(m), k);
    value[k] = 0;
  }
  if (rev) *rev = natsMsg_GetSequence(m);
  natsMsg_Destroy(m);
  return 0;
}

int fq_cl_lease_get(fq_cl_t *c, unsigned shard, char *holder, size_t n, uint64_t *rev,
                    fq_err_t *err) {
  if (!c->kv) return fq_errf(err, FQ_EBADPARAM, "cluster: lease bucket not ensured");
  char v[VALUE_MAX];
  int rc = lease_read(c, shard, v, sizeof v, rev, err);
  if (rc) return rc;
  if (holder && n) {
    /* "<node> <endpoint>": the nonce is not for callers. */
    char *sp = strrchr(v, ' ');
    if (sp && sp != strchr(v, ' ')) *sp = 0;
    snprintf(holder, n, "%s", v);
  }
  return 0;
}

int fq_cl_lease_take(fq_cl_t *c, unsigned shard, const char *endpoint, fq_cl_lease_t *l,
                     fq_err_t *err) {
  memset(l, 0, sizeof *l);
  l->shard = shard;
  if (!c->kv) return fq_errf(err, FQ_EBADPARAM, "cluster: lease bucket not ensured");
  char key[32], val[VALUE_MAX];
  lease_key(shard, key, sizeof key);
  int len = lease_value(c, endpoint, val, sizeof val, err);
  if (len < 0) return len;
  int64_t t = fq_mono_ns();
  uint64_t rev = 0;
  natsStatus s = kvStore_Create(&rev, c->kv, key, val, len);
  if (s == NATS_OK) {
    l->held = true;
    l->rev = rev;
    l->sent_ns = t;
    return 0;
  }
  /* Refused because it is held, or no answer: tell them apart by reading
   * it (a held lease names its holder in the error). */
  fq_err_t e2;
  char holder[VALUE_MAX];
  uint64_t hrev = 0;
  int rc = lease_read(c, shard, holder, sizeof holder, &hrev, &e2);
  if (rc == 0 && strcmp(holder, val) == 0) {
    /* This very write landed and its answer was lost (the nonce). */
    l->held = true;
    l->rev = hrev;
    l->sent_ns = t;
    return 0;
  }
  if (rc == 0) {
    char *sp = strrchr(holder, ' ');
    if (sp && sp != strchr(holder, ' ')) *sp = 0;
    return fq_errf(err, FQ_CL_ELEASE, "cluster: shard %u is held by %s (revision %" PRIu64 ")",
                   shard, holder, hrev);
  }
  return nfail(err, FQ_CL_EUNAVAIL, s, 0, "cluster: lease take");
}

int fq_cl_lease_renew(fq_cl_t *c, fq_cl_lease_t *l, const char *endpoint, fq_err_t *err) {
  if (!l->held) return fq_errf(err, FQ_CL_ELEASE, "cluster: shard %u: lease not held", l->shard);
  if (!c->kv) return fq_errf(err, FQ_EBADPARAM, "cluster: lease bucket not ensured");
  char key[32], val[VALUE_MAX];
  lease_key(l->shard, key, sizeof key);
  int len = lease_value(c, endpoint, val, sizeof val, err);
  if (len < 0) return len;
  int64_t t = fq_mono_ns();
  uint64_t rev = 0;
  natsStatus s = kvStore_Update(&rev, c->kv, key, val, len, l->rev);
  if (s == NATS_OK) {
    l->rev = rev;
    l->sent_ns = t;
    return 0;
  }
  natsStatus ls = NATS_OK;
  const char *why = nats_GetLastError(&ls);
  char whybuf[160];
  snprintf(whybuf, sizeof whybuf, "%s%s%s", natsStatus_GetText(s), why && *why ? ": " : "",
           why ? why : "");
  /* Past TTL since the last write that landed was sent, the servers have
   * dropped the lease (or will before anyone could be told otherwise):
   * it is lost whatever a read says now. */
  bool expired = fq_mono_ns() - l->sent_ns >= c->o.lease_ttl_ms * NS_PER_MS;
  fq_err_t e2;
  char holder[VALUE_MAX];
  uint64_t hrev = 0;
  int rc = lease_read(c, l->shard, holder, sizeof holder, &hrev, &e2);
  if (rc == 0 && strcmp(holder, val) == 0) {
    /* This very update landed (sent at t) and its answer was lost. */
    l->rev = hrev;
    l->sent_ns = t;
    return 0;
  }
  if (rc == 0 && hrev > l->rev) {
    l->held = false;
    char *sp = strrchr(holder, ' ');
    if (sp && sp != strchr(holder, ' ')) *sp = 0;
    return fq_errf(err, FQ_CL_ELEASE, "cluster: shard %u: lease lost to %s (revision %" PRIu64
                   ", ours was %" PRIu64 ")", l->shard, holder, hrev, l->rev);
  }
  if (expired) {
    l->held = false;
    return fq_errf(err, FQ_CL_ELEASE, "cluster: shard %u: lease expired (revision %" PRIu64
                   " not renewed for a TTL: %s)", l->shard, l->rev, whybuf);
  }
  /* Still ours as far as anyone can tell (same revision, or a read that
   * could not be made or lags): try again; may_act runs out on its own. */
  return fq_errf(err, FQ_CL_EUNAVAIL, "cluster: lease renew: %s", whybuf);
}

int fq_cl_lease_release(fq_cl_t *c, fq_cl_lease_t *l, fq_err_t *err) {
  if (!l->held) return 0;
  l->held = false; /* whatever happens next, we stop acting */
  if (!c->kv) return fq_errf(err, FQ_EBADPARAM, "cluster: lease bucket not ensured");
  /* A delete marker, only if the key is still at our revision: a plain
   * kvStore_Delete could delete a successor's lease. */
  char subject[64];
  snprintf(subject, sizeof subject, "$KV.%s.shard.%u", LEASE_BUCKET, l->shard);
  natsMsg *m = NULL;
  natsStatus s = natsMsg_Create(&m, subject, NULL, NULL, 0);
  if (s == NATS_OK) s = natsMsgHeader_Set(m, "KV-Operation", "DEL");
  if (s != NATS_OK) {
    natsMsg_Destroy(m);
    return nfail(err, FQ_EINTERNAL, s, 0, "cluster: lease release");
  }
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.ExpectLastSubjectSeq = l->rev;
  po.MaxWait = c->o.timeout_ms;
  jsPubAck *pa = NULL;
  jsErrCode je = 0;
  s = js_PublishMsg(&pa, c->js, m, &po, &je);
  natsMsg_Destroy(m);
  if (pa) jsPubAck_Destroy(pa);
  if (s == NATS_OK) return 0;
  if (je == JSStreamWrongLastSequenceErr)
    return fq_errf(err, FQ_CL_ELEASE, "cluster: shard %u: lease had moved on already", l->shard);
  return nfail(err, FQ_CL_EUNAVAIL, s, je, "cluster: lease release");
}

/* Presence: key "node.<id>" in the lease bucket, rewritten by each live
 * node about once a second; the bucket's TTL removes a dead node's key
 * like its leases.  The nodes alive (keys present) are what a node
 * divides the shards by when it decides how many to take (clnode.c). */
int fq_cl_presence(fq_cl_t *c, const char *endpoint, unsigned *alive, fq_err_t *err) {
  if (!c->kv) return fq_errf(err, FQ_EBADPARAM, "cluster: lease bucket not ensured");
  char key[48], val[VALUE_MAX];
  snprintf(key, sizeof key, "node.%s", c->node);
  int len = lease_value(c, endpoint, val, sizeof val, err);
  if (len < 0) return len;
  uint64_t rev = 0;
  natsStatus s = kvStore_Put(&rev, c->kv, key, val, len);
  if (s != NATS_OK) return nfail(err, FQ_CL_EUNAVAIL, s, 0, "cluster: presence put");
  if (!alive) return 0;
  /* Counted from the bucket stream's subjects (one API request), not
   * with kvStore_Keys, which makes and drops a consumer every call: the
   * servers' cost of an idle cluster was mostly that. */
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Stream.Info.SubjectsFilter = "$KV." LEASE_BUCKET ".node.>";
  jsStreamInfo *si = NULL;
  jsErrCode je = 0;
  s = js_GetStreamInfo(&si, c->js, LEASE_STREAM, &jo, &je);
  if (s != NATS_OK) return nfail(err, FQ_CL_EUNAVAIL, s, je, "cluster: presence count");
  unsigned n = 0;
  if (si->State.Subjects) n = (unsigned)si->State.Subjects->Count;
  jsStreamInfo_Destroy(si);
  *alive = n ? n : 1;
  return 0;
}

bool fq_cl_lease_may_act(const fq_cl_t *c, const fq_cl_lease_t *l, int64_t now_ns) {
  int64_t act = c->o.act_ms > 0 ? c->o.act_ms : c->o.lease_ttl_ms / 2;
  return l->held && now_ns - l->sent_ns < act * NS_PER_MS;
}

/* --- the log ---------------------------------------------------------------- */

int fq_cl_last_seq(fq_cl_t *c, unsigned shard, uint64_t *seq, fq_err_t *err) {
  char name[32];
  fq_cl_stream_name(shard, name, sizeof name);
  jsStreamInfo *si = NULL;
  jsErrCode je = 0;
  natsStatus s = js_GetStreamInfo(&si, c->js, name, NULL, &je);
  if (s == NATS_NOT_FOUND || je == JSStreamNotFoundErr) {
    if (si) jsStreamInfo_Destroy(si);
    return fq_errf(err, FQ_ENOTFOUND, "cluster: no stream %s", name);
  }
  if (s != NATS_OK) {
    if (si) jsStreamInfo_Destroy(si);
    return nfail(err, status_code(s, je), s, je, "cluster: stream info");
  }
  *seq = si->State.LastSeq;
  jsStreamInfo_Destroy(si);
  return 0;
}

/* After "wrong last sequence": is message seq of the stream our own (an
 * earlier attempt of this append whose answer was lost)?  1 yes, 0 no,
 * < 0 could not tell. */
static int is_own(fq_cl_t *c, const char *stream, uint64_t seq, const char *msgid,
                  fq_err_t *err) {
  natsMsg *m = NULL;
  jsErrCode je = 0;
  natsStatus s = js_GetMsg(&m, c->js, stream, seq, NULL, &je);
  if (s == NATS_NOT_FOUND) return 0;
  if (s != NATS_OK) return nfail(err, FQ_CL_EUNAVAIL, s, je, "cluster: read back an append");
  const char *id = NULL;
  int own = natsMsgHeader_Get(m, "Nats-Msg-Id", &id) == NATS_OK && id && strcmp(id, msgid) == 0;
  natsMsg_Destroy(m);
  return own;
}

int fq_cl_append(fq_cl_t *c, unsigned shard, const uint8_t *p, size_t n, uint64_t expected_last,
                 uint64_t term, uint64_t *seq, fq_err_t *err) {
  if (expected_last == 0)
    return fq_errf(err, FQ_EBADPARAM, "cluster: shard %u: append needs the expected last "
                   "sequence (>= 1: the stream's genesis)", shard);
  if (n > (size_t)c->o.max_msg)
    return fq_errf(err, FQ_ETOOLARGE, "cluster: shard %u: append of %zu bytes above %" PRId32,
                   shard, n, c->o.max_msg);
  char stream[32], subject[48], msgid[96];
  fq_cl_stream_name(shard, stream, sizeof stream);
  fq_cl_subject(shard, subject, sizeof subject);
  /* The id names the slot and the writer's term: the same append retried
   * is the same id, another writer's (or another term's) never is. */
  snprintf(msgid, sizeof msgid, "%u.%" PRIu64 ".%s.%" PRIu64, shard, expected_last + 1, c->node,
           term);
  natsMsg *m = NULL;
  natsStatus s = natsMsg_Create(&m, subject, NULL, (const char *)p, (int)n);
  if (s != NATS_OK) return nfail(err, FQ_EINTERNAL, s, 0, "cluster: append");
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MsgId = msgid;
  po.ExpectLastSeq = expected_last;
  po.MaxWait = c->o.timeout_ms;
  jsPubAck *pa = NULL;
  jsErrCode je = 0;
  s = js_PublishMsg(&pa, c->js, m, &po, &je);
  natsMsg_Destroy(m);
  if (s == NATS_OK) {
    uint64_t got = pa->Sequence;
    jsPubAck_Destroy(pa);
    if (got != expected_last + 1)
      return fq_errf(err, FQ_EPROTO, "cluster: shard %u: append landed at %" PRIu64
                     ", expected %" PRIu64, shard, got, expected_last + 1);
    *seq = got;
    return 0;
  }
  int code = status_code(s, je);
  if (code == FQ_CL_EFENCED) {
    /* Refused: the slot is taken.  By us (a retry whose first attempt
     * landed, outside the duplicate window), or by someone else. */
    fq_err_t e2;
    int own = is_own(c, stream, expected_last + 1, msgid, &e2);
    if (own == 1) {
      *seq = expected_last + 1;
      return 0;
    }
    if (own < 0) {
      *err = e2;
      return own;
    }
    uint64_t last = 0;
    fq_cl_last_seq(c, shard, &last, &e2);
    return fq_errf(err, FQ_CL_EFENCED, "cluster: shard %u: fenced: the log is at %" PRIu64
                   ", this node expected %" PRIu64, shard, last, expected_last);
  }
  return nfail(err, code, s, je, "cluster: append");
}

/* --- followers -------------------------------------------------------------- */

/* (Re)subscribe f from f->pos + 1. */
static int follow_sub(fq_cl_follow_t *f, fq_err_t *err) {
  if (f->sub) {
    natsSubscription_Unsubscribe(f->sub);
    natsSubscription_Destroy(f->sub);
    f->sub = NULL;
  }
  char stream[32], subject[48];
  fq_cl_stream_name(f->shard, stream, sizeof stream);
  fq_cl_subject(f->shard, subject, sizeof subject);
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream;
  /* An ordered consumer: no acks, flow control, and the library recreates
   * it from the last sequence it delivered when it sees a gap. */
  so.Ordered = true;
  so.Config.DeliverPolicy = js_DeliverByStartSequence;
  so.Config.OptStartSeq = f->pos + 1;
  jsErrCode je = 0;
  natsStatus s = js_SubscribeSync(&f->sub, f->c->js, subject, NULL, &so, &je);
  if (s != NATS_OK) {
    f->sub = NULL;
    return nfail(err, status_code(s, je), s, je, "cluster: follow");
  }
  return 0;
}

int fq_cl_follow_open(fq_cl_t *c, unsigned shard, uint64_t from, fq_cl_follow_t **out,
                      fq_err_t *err) {
  *out = NULL;
  if (from < 1) return fq_errf(err, FQ_EBADPARAM, "cluster: follow from sequence 0");
  fq_cl_follow_t *f = calloc(1, sizeof *f);
  if (!f) return fq_errf(err, -ENOMEM, "cluster: out of memory");
  f->c = c;
  f->shard = shard;
  f->pos = from - 1;
  int rc = follow_sub(f, err);
  if (rc) {
    free(f);
    return rc;
  }
  *out = f;
  return 0;
}

int fq_cl_follow_next(fq_cl_follow_t *f, size_t max, int64_t wait_ms, fq_cl_follow_fn fn,
                      void *ud, size_t *got, fq_err_t *err) {
  *got = 0;
  if (!f->sub) { /* the last resubscription failed: again */
    int rc = follow_sub(f, err);
    if (rc) return rc;
  }
  while (*got < max) {
    int pending = 0, bytes = 0;
    if (*got > 0) {
      /* After the first, only what is here already. */
      if (natsSubscription_GetPending(f->sub, &pending, &bytes) != NATS_OK || pending <= 0) break;
    }
    natsMsg *m = NULL;
    natsStatus s = natsSubscription_NextMsg(&m, f->sub, *got ? 1 : (wait_ms > 0 ? wait_ms : 1));
    if (s == NATS_TIMEOUT && *got == 0) {
      /* Nothing for a whole wait.  Either the log has nothing new, or the
       * consumer is stuck: it lived on a server that died, and the client
       * did not recreate it (seen with libnats 3.4.1: a follower stopped
       * for good after a kill -9 of its consumer's server).  The stream
       * says which; a stuck one is made again from the next sequence. */
      uint64_t last = 0;
      fq_err_t e2;
      if (fq_cl_last_seq(f->c, f->shard, &last, &e2) == 0 && last > f->pos) {
        f->resubs++;
        int rc = follow_sub(f, err);
        if (rc) return rc;
      }
      break;
    }
    if (s == NATS_TIMEOUT) break;
    if (s != NATS_OK) return nfail(err, FQ_CL_EUNAVAIL, s, 0, "cluster: follow");
    jsMsgMetaData *md = NULL;
    s = natsMsg_GetMetaData(&md, m);
    if (s != NATS_OK) {
      natsMsg_Destroy(m);
      return nfail(err, FQ_EPROTO, s, 0, "cluster: follow: message without metadata");
    }
    uint64_t seq = md->Sequence.Stream;
    jsMsgMetaData_Destroy(md);
    if (seq <= f->pos) {
      /* Delivered again (a consumer made again from a position its
       * predecessor had already passed, the client's own reset): handed
       * out once only.  Seen as "message 1673 after 1673" in a soak, which
       * this used to take for a hole and give the takeover up. */
      natsMsg_Destroy(m);
      f->repeats++;
      continue;
    }
    if (seq != f->pos + 1) {
      natsMsg_Destroy(m);
      return fq_errf(err, FQ_EPROTO, "cluster: shard %u: log message %" PRIu64 " after %" PRIu64
                     " (a hole: the log no longer holds what this copy needs)", f->shard, seq,
                     f->pos);
    }
    int rc = fn(ud, seq, (const uint8_t *)natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    natsMsg_Destroy(m);
    f->pos = seq;
    (*got)++;
    if (rc) return rc;
  }
  return 0;
}

uint64_t fq_cl_follow_pos(const fq_cl_follow_t *f) { return f->pos; }
uint64_t fq_cl_follow_resubs(const fq_cl_follow_t *f) { return f->resubs; }

void fq_cl_follow_close(fq_cl_follow_t **fp) {
  fq_cl_follow_t *f = *fp;
  if (!f) return;
  if (f->sub) {
    natsSubscription_Unsubscribe(f->sub);
    natsSubscription_Destroy(f->sub);
  }
  free(f);
  *fp = NULL;
}
