/*
 * In-memory per-device FIFO queues and the deadline heap of one shard.
 * The durable truth is the store's `active` database (command number ->
 * device, queue sequence, deadline), written in the same transaction as
 * every change; these structures are rebuilt from it at start-up.  They
 * exist so that the hot path never rewrites B-tree pages keyed by device
 * or by deadline.
 *
 * Commands are identified by their per-shard number.  Owned by one shard
 * thread; not thread safe.
 */
#ifndef FQ_DEVQ_H
#define FQ_DEVQ_H

#include <stddef.h>
#include <stdint.h>

typedef struct fq_devq fq_devq_t;

fq_devq_t *fq_devq_new(void);
void fq_devq_destroy(fq_devq_t **qp);

/* Make room for n commands in all (a rebuild that knows its count):
 * 0 or -ENOMEM. */
int fq_devq_reserve(fq_devq_t *q, size_t n);

/* Append command num (< 2^56, an id's number) to the device's FIFO with
 * its deadline.  Commands must be pushed in increasing queue order per
 * device.  A number already held moves to the tail.  0 or -ENOMEM.
 * (A deadline left in the heap by an earlier push of the same number is
 * told from the current one by an 8-bit push generation: the shard pushes
 * a number once per rebuild, when it is created or released.) */
int fq_devq_push(fq_devq_t *q, const char *device, uint64_t num, int64_t deadline);

/* Remove num from its device's FIFO and from the deadline heap (it became
 * terminal).  No-op when absent. */
void fq_devq_remove(fq_devq_t *q, uint64_t num);

/* Stop tracking num's deadline (the dispatcher owns an in-flight command's
 * deadline); it stays in its device's FIFO. */
void fq_devq_clear_deadline(fq_devq_t *q, uint64_t num);

/* Copy up to max numbers of the device's FIFO, oldest first; returns how
 * many the queue holds (which may exceed max). */
size_t fq_devq_list(const fq_devq_t *q, const char *device, uint64_t *nums, size_t max);

/* Visit every device that has a queue, with the number at its head (the
 * oldest in queue order), in no particular order; fn returns non-zero to
 * stop (that value is returned).  The queues must not change during the
 * walk: collect the devices first to change them. */
int fq_devq_each_head(const fq_devq_t *q, int (*fn)(void *ud, const char *device, uint64_t num),
                      void *ud);

/* Earliest deadline among queued commands: 0 with *deadline and *num set, or
 * -1 when there is none. */
int fq_devq_first_deadline(fq_devq_t *q, int64_t *deadline, uint64_t *num);

/* The queues as 64-bit words, for the restart snapshot (store.h): every
 * device's FIFO in order and every command's deadline; a command whose
 * deadline was cleared (in flight) is written with deadline_of(ud, num),
 * the one a rebuild from the store would give it.  Appended to out: 0, or
 * -ENOMEM / FQ_ETOOLARGE. */
struct fq_buf;
int fq_devq_export(const fq_devq_t *q, struct fq_buf *out,
                   int64_t (*deadline_of)(void *ud, uint64_t num), void *ud);

/* Fill an empty q from what fq_devq_export wrote (words, n of them), as
 * the same pushes would: 0; -EINVAL when q is not empty or the words do
 * not describe queues (q is then left to be destroyed); -ENOMEM. */
int fq_devq_import(fq_devq_t *q, const uint64_t *words, size_t n);

/* Number of commands held, and the memory the structures hold (bytes). */
size_t fq_devq_count(const fq_devq_t *q);
size_t fq_devq_bytes(const fq_devq_t *q);

#endif
