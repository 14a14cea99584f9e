/*
 * The write set of one group commit, as one log message of a shard's
 * stream (docs/cluster.md, "One message = one group commit"):
 *
 *   [1, shard, commit, node, [[db, op, key, val], ...]]
 *
 * msgpack: version 1, the shard number, the shard's commit counter, the
 * appending node's id (str), and the LMDB writes in the order made: db is
 * the index of a named database of store.h, op FQ_WS_PUT (val bin) or
 * FQ_WS_DEL (val nil), key bin.  An empty message is the stream's genesis.
 *
 * The owner collects the writes while its transaction runs (fq_ws_put /
 * fq_ws_del, with a mark and rollback around a nested transaction that
 * may be dropped), encodes them once the transaction is prepared, and
 * appends the bytes; a follower decodes each message and applies the
 * operations in order.  Decoding takes untrusted bytes: every length and
 * count is checked against what is left, nothing is allocated.
 */
#ifndef FQ_WRITESET_H
#define FQ_WRITESET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleetq/buf.h"
#include "fleetq/error.h"

#define FQ_WS_VERSION 1
#define FQ_WS_DB_MAX 32   /* db indexes are below this */

enum { FQ_WS_PUT = 0, FQ_WS_DEL = 1 };

typedef struct fq_ws {
  fq_buf_t ops;            /* the encoded operations so far */
  uint32_t nops;
} fq_ws_t;

/* cap: the most bytes the operations may take (0: fq_buf's default). */
void fq_ws_init(fq_ws_t *w, size_t cap);
void fq_ws_reset(fq_ws_t *w);
void fq_ws_free(fq_ws_t *w);

/* Record one write.  0, FQ_EBADPARAM (db out of range), FQ_ETOOLARGE
 * (past the cap: the caller cuts the batch), -ENOMEM. */
int fq_ws_put(fq_ws_t *w, unsigned db, const void *key, size_t klen, const void *val,
              size_t vlen);
int fq_ws_del(fq_ws_t *w, unsigned db, const void *key, size_t klen);

/* Where the write set is now, and back to it (a nested transaction that
 * was aborted takes its writes along). */
typedef struct fq_ws_mark {
  size_t len;
  uint32_t nops;
} fq_ws_mark_t;
fq_ws_mark_t fq_ws_mark(const fq_ws_t *w);
void fq_ws_rollback(fq_ws_t *w, fq_ws_mark_t m);

/* The whole message, appended to out. */
int fq_ws_encode(const fq_ws_t *w, unsigned shard, uint64_t commit, const char *node,
                 fq_buf_t *out);

typedef struct fq_ws_head {
  bool genesis;            /* the empty message: nothing else is set */
  unsigned shard;
  uint64_t commit;
  char node[33];
  uint32_t nops;
} fq_ws_head_t;

/* Called for each operation in order (val NULL for a delete); a non-zero
 * return stops the decoding and is returned. */
typedef int (*fq_ws_op_fn)(void *ud, unsigned db, int op, const uint8_t *key, size_t klen,
                           const uint8_t *val, size_t vlen);

/* Check and walk a message: h filled, fn (may be NULL: check only) called
 * per operation.  FQ_EPROTO, with what and where in err, for anything
 * malformed (then fn may have seen a prefix of the operations: a
 * follower applies inside a transaction it aborts on error). */
int fq_ws_decode(const uint8_t *p, size_t n, fq_ws_head_t *h, fq_ws_op_fn fn, void *ud,
                 fq_err_t *err);

#endif
