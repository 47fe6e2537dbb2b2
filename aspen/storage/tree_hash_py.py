"""The twin of ``_treehash.c`` without a compiler of our own: the same chaining values,
written from the BLAKE3 specification (compression function, chunk chaining,
left-balanced parent nodes) over numpy lanes.

Every chunk of a batch is one lane, so each step of the compression runs once for all
of them; then each tree level merges its pairs the same way. That keeps it at tens of
MB/s (a scalar Python BLAKE3 manages 0.5 MB/s, too slow for a 64 MiB blob) on a
machine where the C build is missing. Only multi-segment blobs reach it; one-segment
blobs are hashed by the ``blake3`` package either way."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Buffer = bytes | bytearray | memoryview
IV = np.array(
    [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19], np.uint32
)
CHUNK_START, CHUNK_END, PARENT, ROOT = 1, 2, 4, 8
BLOCK_LEN, CHUNK_LEN, SEGMENT_CHUNKS = 64, 1024, 256
BATCH_CHUNKS = 4096  # lanes per batch: large enough to amortise numpy's per-call cost
_PERMUTATION = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)
_G = (
    (0, 4, 8, 12),
    (1, 5, 9, 13),
    (2, 6, 10, 14),
    (3, 7, 11, 15),
    (0, 5, 10, 15),
    (1, 6, 11, 12),
    (2, 7, 8, 13),
    (3, 4, 9, 14),
)


def _schedules() -> tuple[tuple[int, ...], ...]:
    """The message word order of each of the seven rounds."""
    order, rounds = tuple(range(16)), []
    for _ in range(7):
        rounds.append(order)
        order = tuple(order[i] for i in _PERMUTATION)
    return tuple(rounds)


_ROUNDS = _schedules()


def _rotr(x: np.ndarray, n: int) -> np.ndarray:
    return (x >> np.uint32(n)) | (x << np.uint32(32 - n))


def compress(
    cv: np.ndarray, m: np.ndarray, counter: np.ndarray, block_len: np.ndarray, flags: np.ndarray
) -> np.ndarray:
    """Next chaining values (8 × lanes) from chaining values (8 × lanes), message words
    (16 × lanes) and per-lane counter, block length and flags (uint32 wraps like the spec)."""
    lanes = cv.shape[1]
    v = [*cv, *(np.full(lanes, w, np.uint32) for w in IV[:4])]
    v += [(counter & 0xFFFFFFFF).astype(np.uint32), (counter >> 32).astype(np.uint32)]
    v += [np.broadcast_to(block_len, lanes).astype(np.uint32), np.broadcast_to(flags, lanes).astype(np.uint32)]
    with np.errstate(over="ignore"):
        for order in _ROUNDS:
            for i, (a, b, c, d) in enumerate(_G):
                for word, rot_d, rot_b in ((m[order[2 * i]], 16, 12), (m[order[2 * i + 1]], 8, 7)):
                    v[a] = v[a] + v[b] + word
                    v[d] = _rotr(v[d] ^ v[a], rot_d)
                    v[c] = v[c] + v[d]
                    v[b] = _rotr(v[b] ^ v[c], rot_b)
    return np.stack([v[i] ^ v[i + 8] for i in range(8)])


def _full_chunk_cvs(data: bytes | memoryview, first_chunk: int) -> np.ndarray:
    """Chaining values (8 × n) of n whole chunks starting at chunk ``first_chunk``."""
    words = np.frombuffer(data, dtype="<u4").reshape(-1, CHUNK_LEN // BLOCK_LEN, 16)
    lanes = words.shape[0]
    counter = np.arange(first_chunk, first_chunk + lanes, dtype=np.uint64)
    cv = np.repeat(IV[:, None], lanes, axis=1)
    for block in range(CHUNK_LEN // BLOCK_LEN):
        flags = (CHUNK_START if block == 0 else 0) | (CHUNK_END if block == CHUNK_LEN // BLOCK_LEN - 1 else 0)
        cv = compress(cv, words[:, block, :].T, counter, np.uint32(BLOCK_LEN), np.uint32(flags))
    return cv


def _partial_chunk_cv(chunk: bytes, counter: int) -> np.ndarray:
    """Chaining value (8 × 1) of a chunk shorter than 1 KiB."""
    cv = IV[:, None].copy()
    blocks = max(1, -(-len(chunk) // BLOCK_LEN))
    for i in range(blocks):
        block = chunk[i * BLOCK_LEN : (i + 1) * BLOCK_LEN]
        m = np.frombuffer(block.ljust(BLOCK_LEN, b"\0"), dtype="<u4")[:, None]
        flags = (CHUNK_START if i == 0 else 0) | (CHUNK_END if i == blocks - 1 else 0)
        cv = compress(cv, m, np.array([counter], np.uint64), np.uint32(len(block)), np.uint32(flags))
    return cv


def _parents(left: np.ndarray, right: np.ndarray, flags: int) -> np.ndarray:
    lanes = left.shape[1]
    cv = np.repeat(IV[:, None], lanes, axis=1)
    zero = np.zeros(lanes, np.uint64)
    return compress(cv, np.concatenate([left, right]), zero, np.uint32(BLOCK_LEN), np.uint32(flags))


def _subtree(cvs: np.ndarray, flags: int = PARENT) -> np.ndarray:
    """Left-balanced merge of the columns of ``cvs`` (the left part holds the largest
    power of two below their count) into one chaining value (8 × 1); a perfect subtree
    merges a whole level per step."""
    n = cvs.shape[1]
    if n == 1:
        return cvs
    if n & (n - 1) == 0:
        while cvs.shape[1] > 2:
            cvs = _parents(cvs[:, 0::2], cvs[:, 1::2], PARENT)
        return _parents(cvs[:, :1], cvs[:, 1:], flags)
    left = 1 << ((n - 1).bit_length() - 1)
    return _parents(_subtree(cvs[:, :left]), _subtree(cvs[:, left:]), flags)


def _bytes(cvs: np.ndarray) -> bytes:
    return cvs.T.astype("<u4").tobytes()


def segment_cvs(data: Buffer | Sequence[Buffer], first_index: int) -> bytes:
    """Chaining values of the 256 KiB segments of ``data``: a buffer, or a sequence of
    buffers taken as their concatenation (joined here; the native module reads them in place)."""
    if not isinstance(data, Buffer):
        data = b"".join(data)
    view = memoryview(data).cast("B")
    segment = SEGMENT_CHUNKS * CHUNK_LEN
    whole = len(view) // segment * segment
    out = bytearray()
    for pos in range(0, whole, BATCH_CHUNKS * CHUNK_LEN):
        part = view[pos : min(whole, pos + BATCH_CHUNKS * CHUNK_LEN)]
        cvs = _full_chunk_cvs(part, first_index * SEGMENT_CHUNKS + pos // CHUNK_LEN)
        while cvs.shape[1] > len(part) // segment:  # one tree level of every segment at once
            cvs = _parents(cvs[:, 0::2], cvs[:, 1::2], PARENT)
        out += _bytes(cvs)
    if whole < len(view):
        tail = view[whole:]
        base = (first_index + whole // segment) * SEGMENT_CHUNKS
        full = len(tail) // CHUNK_LEN * CHUNK_LEN
        columns = [_full_chunk_cvs(tail[:full], base)] if full else []
        if full < len(tail):
            columns.append(_partial_chunk_cv(bytes(tail[full:]), base + full // CHUNK_LEN))
        out += _bytes(_subtree(np.concatenate(columns, axis=1)))
    return bytes(out)


def root_of(table: bytes) -> bytes:
    if len(table) < 64 or len(table) % 32:
        raise ValueError("a table of two or more 32-byte chaining values is needed")
    cvs = np.frombuffer(table, dtype="<u4").reshape(-1, 8).T.astype(np.uint32)
    return _bytes(_subtree(cvs, PARENT | ROOT))
