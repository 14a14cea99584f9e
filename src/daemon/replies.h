/*
 * Replies to clients, with the memory each client holds in them bounded in
 * bytes.
 *
 * ZeroMQ bounds what waits for a peer that does not read by a number of
 * messages (the ROUTER's ZMQ_SNDHWM), whatever their size: 100,000 replies
 * of a few hundred KB each are tens of GB.  Here every reply body is handed
 * to ZeroMQ without a copy (zmq_msg_init_data) with a free function that
 * ZeroMQ calls once it no longer needs the bytes: written to the client's
 * TCP socket (or, over inproc, read by the client), or dropped with its
 * connection.  Until then the reply is charged to its client, named by the
 * routing id (the first envelope frame): its size, its envelope frames' and
 * ZeroMQ's per-frame overhead.  A reply that would take a client's charge
 * above max_bytes is not sent: that client has stopped reading (or reads
 * far slower than it asks), and what it is owed costs at most max_bytes
 * (plus the kernel's socket buffer).  A client that reads pays nothing.
 *
 * Threads: one owner (the thread that owns the ROUTER) calls everything
 * below; the free function runs in ZeroMQ's threads and touches only an
 * atomic counter and its own allocation, so a client's entry is freed by
 * whoever drops the last reference to it (the table or a reply in flight),
 * which may be after fq_replies_destroy(): ZeroMQ releases what is queued
 * when the socket is finally closed.
 */
#ifndef FQ_REPLIES_H
#define FQ_REPLIES_H

#include <stddef.h>
#include <stdint.h>

#include "fleetq/error.h"

typedef struct fq_replies fq_replies_t;

/* One frame to send, borrowed for the call. */
typedef struct fq_frame {
  const void *p;
  size_t n;
} fq_frame_t;

/* What ZeroMQ and this module spend on a reply besides its bytes, per
 * frame (a zmq_msg_t in the pipe) and per reply (the body's content block
 * and this module's header).  Part of every charge. */
#define FQ_REPLIES_FRAME_COST 64
#define FQ_REPLIES_REPLY_COST 96

/* A ledger for the ROUTER socket `router` (borrowed: it must outlive
 * every send), allowing each client max_bytes of replies it has not taken
 * (0: no limit, replies are still counted).  NULL when out of memory. */
fq_replies_t *fq_replies_new(void *router, size_t max_bytes);

/* Forget the table (clients' entries still referenced by replies in
 * ZeroMQ's queues are freed when those are).  NULLs *rp; accepts NULL. */
void fq_replies_destroy(fq_replies_t **rp);

/* Send [env[0..nenv) body] on the ROUTER, env[0] being the client's
 * routing id.  Returns 0 (handed to ZeroMQ, which may still drop it: an
 * unknown peer, the socket's high-water mark), FQ_EBUSY when the client
 * already holds too much (nothing sent), FQ_EBADREQ without a routing id,
 * -ENOMEM. */
int fq_replies_send(fq_replies_t *r, const fq_frame_t *env, int nenv, const void *body,
                    size_t len);

/* Bytes charged to the client with this routing id now (0 when unknown). */
size_t fq_replies_queued(fq_replies_t *r, const void *id, size_t idlen);

/* Drop the entries of clients that hold nothing (call now and then, e.g.
 * once a second: entries are created by sends and would otherwise pile up
 * as clients come and go).  Returns how many remain; *held (may be NULL)
 * gets the bytes all clients hold. */
size_t fq_replies_sweep(fq_replies_t *r, size_t *held);

/* Replies refused with FQ_EBUSY so far. */
uint64_t fq_replies_dropped(const fq_replies_t *r);

#endif
