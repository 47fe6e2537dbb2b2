/* Chaining values of 256 KiB segments in a blob's BLAKE3 tree, and their merge
 * into the root hash: what lets a whole read verify every segment and the root
 * in one pass (aspen/storage/tree_hash.py explains the scheme).
 *
 * The hashing itself is the official BLAKE3 C implementation (SIMD, chosen at
 * run time), compiled in from Debian's librust-blake3-dev by setup.py; this
 * file only starts its hasher at the segment's chunk offset and finishes a
 * subtree without the root flag. Both use the hasher layout that blake3.h
 * publishes and the compression function from blake3_impl.h. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "blake3.h"
#include "blake3_impl.h"

#define SEGMENT_LEN (256 * 1024)
#define SEGMENT_CHUNKS (SEGMENT_LEN / BLAKE3_CHUNK_LEN)

static void store_words(uint8_t out[32], const uint32_t cv[8]) {
  for (int i = 0; i < 8; i++) {
    out[4 * i] = (uint8_t)cv[i];
    out[4 * i + 1] = (uint8_t)(cv[i] >> 8);
    out[4 * i + 2] = (uint8_t)(cv[i] >> 16);
    out[4 * i + 3] = (uint8_t)(cv[i] >> 24);
  }
}

/* The chaining value of the parent node over two children (64 bytes). */
static void parent_cv(const uint8_t children[64], int root, uint8_t out[32]) {
  uint32_t cv[8];
  memcpy(cv, IV, sizeof cv);
  blake3_compress_in_place(cv, children, BLAKE3_BLOCK_LEN, 0, PARENT | (root ? ROOT : 0));
  store_words(out, cv);
}

static unsigned popcount64(uint64_t x) {
  unsigned n = 0;
  for (; x; x &= x - 1) n++;
  return n;
}

/* Non-root chaining value of segment ``index`` (``len`` bytes, 1..SEGMENT_LEN).
 * The hasher is set up as if the segments before it had been hashed: its chunk
 * counter at their end and one placeholder on the CV stack for each complete
 * subtree they would have left there (popcount of the segment count, segments
 * being 2^8 chunks), so its lazy merging sees the stack depth it expects; the
 * placeholders are never merged, since nothing is fed past this segment. */
static void segment_cv(const uint8_t *data, size_t len, uint64_t index, uint8_t out[32]) {
  blake3_hasher h;
  blake3_hasher_init(&h);
  unsigned base = popcount64(index);
  h.chunk.chunk_counter = index * SEGMENT_CHUNKS;
  memset(h.cv_stack, 0, (size_t)base * BLAKE3_OUT_LEN);
  h.cv_stack_len = (uint8_t)base;
  blake3_hasher_update(&h, data, len);

  uint8_t cv[32];
  unsigned remaining;
  if (h.chunk.buf_len > 0 || h.chunk.blocks_compressed > 0) {
    uint32_t words[8];
    memcpy(words, h.chunk.cv, sizeof words);
    uint8_t flags = h.chunk.flags | CHUNK_END | (h.chunk.blocks_compressed == 0 ? CHUNK_START : 0);
    blake3_compress_in_place(words, h.chunk.buf, h.chunk.buf_len, h.chunk.chunk_counter, flags);
    store_words(cv, words);
    remaining = h.cv_stack_len;
  } else {
    remaining = h.cv_stack_len - 2u;
    parent_cv(&h.cv_stack[remaining * BLAKE3_OUT_LEN], 0, cv);
  }
  while (remaining > base) {
    uint8_t block[64];
    remaining--;
    memcpy(block, &h.cv_stack[remaining * BLAKE3_OUT_LEN], 32);
    memcpy(block + 32, cv, 32);
    parent_cv(block, 0, cv);
  }
  memcpy(out, cv, 32);
}

static PyObject *segment_cvs(PyObject *self, PyObject *args) {
  Py_buffer data;
  unsigned long long first;
  if (!PyArg_ParseTuple(args, "y*K", &data, &first)) return NULL;
  Py_ssize_t count = (data.len + SEGMENT_LEN - 1) / SEGMENT_LEN;
  PyObject *out = PyBytes_FromStringAndSize(NULL, count * 32);
  if (out == NULL) {
    PyBuffer_Release(&data);
    return NULL;
  }
  uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(out);
  const uint8_t *src = data.buf;
  Py_ssize_t total = data.len;
  Py_BEGIN_ALLOW_THREADS
  for (Py_ssize_t i = 0; i < count; i++) {
    Py_ssize_t pos = i * SEGMENT_LEN;
    Py_ssize_t len = total - pos < SEGMENT_LEN ? total - pos : SEGMENT_LEN;
    segment_cv(src + pos, (size_t)len, first + (uint64_t)i, dst + 32 * i);
  }
  Py_END_ALLOW_THREADS
  PyBuffer_Release(&data);
  return out;
}

/* The chaining value of the left-balanced subtree over cvs[0..n): the left part
 * holds the largest power of two below n. */
static void subtree(const uint8_t *cvs, Py_ssize_t n, int root, uint8_t out[32]) {
  if (n == 1) {
    memcpy(out, cvs, 32);
    return;
  }
  Py_ssize_t left = 1;
  while (left * 2 < n) left *= 2;
  uint8_t block[64];
  subtree(cvs, left, 0, block);
  subtree(cvs + 32 * left, n - left, 0, block + 32);
  parent_cv(block, root, out);
}

static PyObject *root_of(PyObject *self, PyObject *args) {
  Py_buffer table;
  if (!PyArg_ParseTuple(args, "y*", &table)) return NULL;
  if (table.len < 64 || table.len % 32) {
    PyBuffer_Release(&table);
    PyErr_SetString(PyExc_ValueError, "a table of two or more 32-byte chaining values is needed");
    return NULL;
  }
  uint8_t out[32];
  subtree(table.buf, table.len / 32, 1, out);
  PyBuffer_Release(&table);
  return PyBytes_FromStringAndSize((const char *)out, 32);
}

static PyMethodDef methods[] = {
    {"segment_cvs", segment_cvs, METH_VARARGS,
     "segment_cvs(data, first_index) -> the chaining values of data's 256 KiB segments, 32 bytes each"},
    {"root_of", root_of, METH_VARARGS, "root_of(table) -> the 32-byte root hash over two or more chaining values"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_treehash", NULL, -1, methods};

PyMODINIT_FUNC PyInit__treehash(void) { return PyModule_Create(&module); }
