/*
 * See zmsg.h.
 */
#include "zmsg.h"

int fq_zmsg_recv(void *sock, zmq_msg_t *frames, int max, int flags, bool *overflow) {
  int n = 0;
  if (overflow) *overflow = false;
  for (;;) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, sock, n == 0 ? flags : 0) < 0) {
      zmq_msg_close(&m);
      return n == 0 ? -1 : n;
    }
    int more = zmq_msg_more(&m);
    if (n < max) {
      zmq_msg_init(&frames[n]);
      zmq_msg_move(&frames[n], &m);
      n++;
    } else if (overflow) {
      *overflow = true;
    }
    zmq_msg_close(&m);
    if (!more) return n;
  }
}

void fq_zmsg_close(zmq_msg_t *frames, int n) {
  for (int i = 0; i < n; i++) zmq_msg_close(&frames[i]);
}
