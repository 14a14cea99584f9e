/*
 * Fixed-width integers in byte buffers, big endian (network order:
 * msgpack, the Vehicle Command Protocol's metadata, the traffic and
 * account file formats, LMDB values read back by number) and little endian
 * (the store's compact command records).  Named byteorder.h because
 * <endian.h> belongs to the C library and this folder is on the include
 * path.
 *
 * Everything is static inline and works byte by byte, so it is correct on
 * any host and for any alignment of p; compilers turn each function into
 * one load or store plus a byte swap where the host allows it.  p must
 * point at enough bytes (2, 4 or 8, or n); nothing here checks lengths.
 */
#ifndef FQ_BYTEORDER_H
#define FQ_BYTEORDER_H

#include <stddef.h>
#include <stdint.h>

static inline uint16_t fq_get_be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static inline uint32_t fq_get_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t fq_get_be64(const uint8_t *p) {
  return (uint64_t)fq_get_be32(p) << 32 | fq_get_be32(p + 4);
}

/* The n-byte (0 to 8) big-endian unsigned integer at p. */
static inline uint64_t fq_get_be(const uint8_t *p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) v = v << 8 | p[i];
  return v;
}

static inline void fq_put_be16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

static inline void fq_put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static inline void fq_put_be64(uint8_t *p, uint64_t v) {
  fq_put_be32(p, (uint32_t)(v >> 32));
  fq_put_be32(p + 4, (uint32_t)v);
}

/* The low n bytes (0 to 8) of v, big endian, at p. */
static inline void fq_put_be(uint8_t *p, uint64_t v, size_t n) {
  for (size_t i = n; i > 0; i--) {
    p[i - 1] = (uint8_t)v;
    v >>= 8;
  }
}

static inline uint16_t fq_get_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static inline uint32_t fq_get_le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t fq_get_le64(const uint8_t *p) {
  return (uint64_t)fq_get_le32(p) | (uint64_t)fq_get_le32(p + 4) << 32;
}

static inline void fq_put_le16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}

static inline void fq_put_le32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

static inline void fq_put_le64(uint8_t *p, uint64_t v) {
  fq_put_le32(p, (uint32_t)v);
  fq_put_le32(p + 4, (uint32_t)(v >> 32));
}

#endif
