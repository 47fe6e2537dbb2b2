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

/* Start ``h`` on segment ``index`` as if the segments before it had been hashed:
 * its chunk counter at their end and one placeholder on the CV stack for each
 * complete subtree they would have left there (popcount of the segment count,
 * segments being 2^8 chunks), so its lazy merging sees the stack depth it
 * expects; the placeholders are never merged, since nothing is fed past this
 * segment. Returns that depth, for segment_finish. */
static unsigned segment_begin(blake3_hasher *h, uint64_t index) {
  blake3_hasher_init(h);
  unsigned base = popcount64(index);
  h->chunk.chunk_counter = index * SEGMENT_CHUNKS;
  memset(h->cv_stack, 0, (size_t)base * BLAKE3_OUT_LEN);
  h->cv_stack_len = (uint8_t)base;
  return base;
}

/* The non-root chaining value of the segment fed to ``h`` (1..SEGMENT_LEN bytes). */
static void segment_finish(blake3_hasher *h, unsigned base, uint8_t out[32]) {
  uint8_t cv[32];
  unsigned remaining;
  if (h->chunk.buf_len > 0 || h->chunk.blocks_compressed > 0) {
    uint32_t words[8];
    memcpy(words, h->chunk.cv, sizeof words);
    uint8_t flags = h->chunk.flags | CHUNK_END | (h->chunk.blocks_compressed == 0 ? CHUNK_START : 0);
    blake3_compress_in_place(words, h->chunk.buf, h->chunk.buf_len, h->chunk.chunk_counter, flags);
    store_words(cv, words);
    remaining = h->cv_stack_len;
  } else {
    remaining = h->cv_stack_len - 2u;
    parent_cv(&h->cv_stack[remaining * BLAKE3_OUT_LEN], 0, cv);
  }
  while (remaining > base) {
    uint8_t block[64];
    remaining--;
    memcpy(block, &h->cv_stack[remaining * BLAKE3_OUT_LEN], 32);
    memcpy(block + 32, cv, 32);
    parent_cv(block, 0, cv);
  }
  memcpy(out, cv, 32);
}

/* The chaining values of the segments in the concatenation of ``pieces``
 * (segments may span pieces), the first being segment ``first``. */
static void hash_pieces(const Py_buffer *pieces, Py_ssize_t n, uint64_t first, uint8_t *dst) {
  blake3_hasher h;
  unsigned base = 0;
  size_t filled = 0;
  uint64_t done = 0;
  for (Py_ssize_t i = 0; i < n; i++) {
    const uint8_t *src = pieces[i].buf;
    size_t left = (size_t)pieces[i].len;
    while (left > 0) {
      if (filled == 0) base = segment_begin(&h, first + done);
      size_t take = left < SEGMENT_LEN - filled ? left : SEGMENT_LEN - filled;
      blake3_hasher_update(&h, src, take);
      src += take;
      left -= take;
      filled += take;
      if (filled == SEGMENT_LEN) {
        segment_finish(&h, base, dst + 32 * done++);
        filled = 0;
      }
    }
  }
  if (filled > 0) segment_finish(&h, base, dst + 32 * done);
}

static PyObject *segment_cvs(PyObject *self, PyObject *args) {
  PyObject *data, *seq;
  unsigned long long first;
  if (!PyArg_ParseTuple(args, "OK", &data, &first)) return NULL;
  seq = PyObject_CheckBuffer(data) ? PyTuple_Pack(1, data)
                                   : PySequence_Fast(data, "segment_cvs takes a buffer or a sequence of buffers");
  if (seq == NULL) return NULL;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), got = 0, total = 0;
  Py_buffer *pieces = PyMem_Calloc(n ? (size_t)n : 1, sizeof(Py_buffer));
  PyObject *out = NULL;
  if (pieces == NULL) {
    PyErr_NoMemory();
    goto done;
  }
  for (; got < n; got++) {
    if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &pieces[got], PyBUF_C_CONTIGUOUS) < 0) goto done;
    total += pieces[got].len;
  }
  out = PyBytes_FromStringAndSize(NULL, (total + SEGMENT_LEN - 1) / SEGMENT_LEN * 32);
  if (out == NULL) goto done;
  uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(out);
  Py_BEGIN_ALLOW_THREADS
  hash_pieces(pieces, n, (uint64_t)first, dst);
  Py_END_ALLOW_THREADS
done:
  for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&pieces[i]);
  PyMem_Free(pieces);
  Py_DECREF(seq);
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
     "segment_cvs(data, first_index) -> the chaining values of the 256 KiB segments of data (a buffer, or a "
     "sequence of buffers taken as their concatenation), 32 bytes each"},
    {"root_of", root_of, METH_VARARGS, "root_of(table) -> the 32-byte root hash over two or more chaining values"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_treehash", NULL, -1, methods};

PyMODINIT_FUNC PyInit__treehash(void) { return PyModule_Create(&module); }
