/*
 * fq_clnode: one fleetqd node of a cluster (`fleetqd --cluster`,
 * docs/cluster.md).  It holds the node's view of who owns each shard and
 * runs the lease thread: every LEASE_TICK_MS it renews the leases this
 * node holds (every TTL/3), reads who holds the others (for the ingress's
 * forwarding), and takes the ones nobody holds.  The shard threads read
 * their lease from here before each batch and step down when it is gone;
 * the ingress asks where a shard lives.
 *
 * Threads: the lease thread owns its NATS connection; everything else
 * here is behind one mutex, for the shard threads and the ingress.
 */
#ifndef FQ_CLNODE_H
#define FQ_CLNODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster.h"
#include "fleetq/error.h"

typedef struct fq_clnode fq_clnode_t;

typedef struct fq_clnode_opts {
  const char *urls;        /* --cluster */
  const char *node_id;     /* --node-id */
  const char *advertise;   /* --cluster-advertise: where other nodes forward to */
  unsigned nshards;
  int64_t lease_ttl_ms;    /* 0: cluster.h's default (3000) */
  int64_t retention_ms;    /* how long a shard's log keeps entries (0: 7 days) */
} fq_clnode_opts_t;

/* Connect, make sure every shard's log and the lease bucket exist. */
fq_clnode_t *fq_clnode_new(const fq_clnode_opts_t *o, fq_err_t *err);
/* Start the lease thread. */
int fq_clnode_start(fq_clnode_t *n, fq_err_t *err);
/* Stop the lease thread and give every lease this node holds back (call
 * once the shards have stopped: a successor then takes them at once
 * instead of after the TTL). */
void fq_clnode_stop(fq_clnode_t *n);
void fq_clnode_destroy(fq_clnode_t **np);

const char *fq_clnode_id(const fq_clnode_t *n);
const char *fq_clnode_advertise(const fq_clnode_t *n);

/* A new connection with the node's options, for a shard thread (appends
 * and the follower need their own: a handle is one thread's). */
int fq_clnode_connect(fq_clnode_t *n, fq_cl_t **out, fq_err_t *err);

/* The shard's lease as the lease thread last left it (a copy); true when
 * held and, at now_ns, still good to act on (cluster.h may_act). */
bool fq_clnode_lease(fq_clnode_t *n, unsigned shard, int64_t now_ns, fq_cl_lease_t *out);
/* The shard thread gave the shard up (fenced, lease lost, stopping): the
 * lease thread releases the lease if it still holds it and does not take
 * the shard again for a while. */
void fq_clnode_step_down(fq_clnode_t *n, unsigned shard);
/* Whether the lease thread asks the shard to hand itself over (balance):
 * the shard drains what is in flight, then steps down. */
bool fq_clnode_handover(fq_clnode_t *n, unsigned shard);
/* The shard thread serves the shard (after its takeover) or no longer. */
void fq_clnode_serving(fq_clnode_t *n, unsigned shard, bool on);

/* Where a request for shard goes: FQ_CLNODE_LOCAL (this node holds its
 * lease), FQ_CLNODE_REMOTE (endpoint of the owner in ep), FQ_CLNODE_NONE
 * (nobody holds it as far as this node knows: answer busy). */
enum { FQ_CLNODE_LOCAL = 0, FQ_CLNODE_REMOTE = 1, FQ_CLNODE_NONE = 2 };
int fq_clnode_route(fq_clnode_t *n, unsigned shard, char *ep, size_t cap);

/* For stats: the node id of shard's owner ("" when none known) and
 * whether this node serves it. */
void fq_clnode_owner(fq_clnode_t *n, unsigned shard, char *node, size_t cap, bool *serving);

#endif
