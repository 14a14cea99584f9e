/*
 * Multipart ZeroMQ messages as arrays of frames: the one receive loop the
 * ingress, the shards and the auth thread share.
 */
#ifndef FQ_ZMSG_H
#define FQ_ZMSG_H

#include <stdbool.h>
#include <zmq.h>

/* Receive one whole multipart message from sock into frames[0..max), the
 * first frame with `flags` (e.g. ZMQ_DONTWAIT), the rest blocking (they
 * are already there: ZeroMQ delivers a message atomically).  Frames past
 * max are read and dropped, and *overflow (may be NULL) says so.  Returns
 * the number of frames kept, or -1 when nothing could be received.  The
 * caller closes the frames (fq_zmsg_close). */
int fq_zmsg_recv(void *sock, zmq_msg_t *frames, int max, int flags, bool *overflow);

/* Close frames[0..n). */
void fq_zmsg_close(zmq_msg_t *frames, int n);

#endif
