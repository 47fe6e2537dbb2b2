"""The segment table's chaining values: the C build, its pure-Python twin and the
``blake3`` package agree, and a table merges into exactly the blob's address."""

from __future__ import annotations

import glob
import itertools

import pytest
from blake3 import blake3

from aspen.storage import tree_hash, tree_hash_py
from aspen.storage.segments import SEGMENT_SIZE, SegmentHasher, bad_segment, table_matches
from tests.blobs.conftest import pseudo_random

S = SEGMENT_SIZE
# every shape of tree edge: one chunk, a partial chunk, exact segments, odd segment counts
SIZES = [S + 1, S + 1024, 2 * S, 2 * S + 63, 3 * S + 1025, 4 * S, 5 * S + 7, 9 * S - 1]


def test_the_c_build_is_used_where_debian_ships_the_blake3_sources():
    """The test command installs librust-blake3-dev, so CI hashes with the C build."""
    if not glob.glob("/usr/share/cargo/registry/blake3-*/c/blake3.h"):
        pytest.fail("librust-blake3-dev is missing: scripts/setup.sh installs it")
    assert tree_hash.NATIVE is (tree_hash.os.environ.get("ASPEN_TREEHASH") != "python")


@pytest.mark.parametrize("size", SIZES)
def test_chaining_values_merge_into_the_blake3_hash(size):
    data = pseudo_random(size)
    table = tree_hash.segment_cvs(data, 0)
    assert len(table) == 32 * -(-size // S)
    assert tree_hash.root_of(table) == blake3(data).digest()


@pytest.mark.parametrize("size", [S + 1, 2 * S + 63, 3 * S + 1025])
def test_the_pure_python_twin_gives_the_same_values(size):
    data = pseudo_random(size)
    table = tree_hash_py.segment_cvs(data, 0)
    assert table == tree_hash.segment_cvs(data, 0)
    assert tree_hash_py.root_of(table) == blake3(data).digest()


@pytest.mark.parametrize("module", [tree_hash, tree_hash_py])
def test_a_segment_hashed_alone_at_its_index_gives_its_table_entry(module):
    data = pseudo_random(7 * S + 100)
    table = tree_hash.segment_cvs(data, 0)
    for index in (1, 3, 6, 7):  # popcounts 1, 2, 2, 3: the placeholders the C build stacks
        assert module.segment_cvs(data[index * S : (index + 1) * S], index) == table[32 * index : 32 * index + 32]


@pytest.mark.parametrize("module", [tree_hash, tree_hash_py])
@pytest.mark.parametrize("table", [b"", b"\0" * 32, b"\0" * 33, b"\0" * 95])
def test_root_of_refuses_a_table_that_is_not_two_or_more_entries(module, table):
    with pytest.raises(ValueError):
        module.root_of(table)


@pytest.mark.parametrize("size", [0, 1, S - 1, S, S + 1, 3 * S])
@pytest.mark.parametrize("piece", [1000, S, 1 << 20])
def test_the_hasher_gives_the_address_and_a_matching_table_whatever_the_pieces(size, piece):
    data = pseudo_random(size)
    hasher = SegmentHasher()
    for i in range(0, size, piece):
        hasher.update(data[i : i + piece])
    h, table = hasher.finish()
    assert h == blake3(data).hexdigest()
    assert table_matches(table, h, size)
    assert table == (b"" if size == 0 else blake3(data).digest() if size <= S else tree_hash.segment_cvs(data, 0))


def test_a_table_with_one_entry_changed_or_cut_does_not_match():
    data = pseudo_random(3 * S)
    h, table = _hashed(data)
    assert table_matches(table, h, len(data))
    assert not table_matches(table[:-32], h, len(data))
    assert not table_matches(table[:40] + bytes([table[40] ^ 1]) + table[41:], h, len(data))
    assert not table_matches(table, h, len(data) + 1)


def test_bad_segment_names_the_first_damaged_segment():
    data = bytearray(pseudo_random(4 * S))
    _, table = _hashed(bytes(data))
    assert bad_segment(data, 0, table, len(data)) is None
    assert bad_segment(data[2 * S :], 2, table[64:], len(data)) is None
    data[2 * S + 9] ^= 1
    assert bad_segment(data, 0, table, len(data)) == 2
    assert bad_segment(data[S:], 1, table[32:], len(data)) == 2
    assert bad_segment(data[: 2 * S], 0, table[:64], len(data)) is None
    assert bad_segment(data[3 * S :], 3, table[64:96], len(data)) == 3  # an entry of another segment


def _cut(data: bytes, at: list[int]) -> list[bytes]:
    edges = [0, *at, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@pytest.mark.parametrize("module", [tree_hash, tree_hash_py])
@pytest.mark.parametrize("size", [0, 1, S, 3 * S + 1025, 4 * S])
def test_pieces_hash_as_their_concatenation_wherever_they_are_cut(module, size):
    """A read hands its body chunks over unjoined; segments straddle them anywhere."""
    data = pseudo_random(size)
    whole = tree_hash.segment_cvs(data, 3)
    for at in ([], [0], [1], [S - 1, S, S + 1], list(range(100_003, size, 100_003)), [size // 2, size // 2]):
        pieces = _cut(data, [a for a in at if a <= size])
        assert module.segment_cvs(pieces, 3) == whole, at
        assert module.segment_cvs(tuple(map(memoryview, pieces)), 3) == whole, at


@pytest.mark.parametrize("module", [tree_hash, tree_hash_py])
@pytest.mark.parametrize("junk", [5, None, [b"ok", 7], [b"ok", "text"]])
def test_segment_cvs_refuses_what_is_not_bytes(module, junk):
    with pytest.raises(TypeError):
        module.segment_cvs(junk, 0)


@pytest.mark.parametrize("size", [S, 4 * S])  # one segment (its entry is the root hash), and several
def test_bad_segment_takes_pieces_too(size):
    data = bytearray(pseudo_random(size))
    _, table = _hashed(bytes(data))
    assert bad_segment(_cut(bytes(data), [7, S // 2 + 1]), 0, table, size) is None
    data[S - 1] ^= 1
    assert bad_segment(_cut(bytes(data), [7, S // 2 + 1]), 0, table, size) == 0


def _hashed(data: bytes) -> tuple[str, bytes]:
    hasher = SegmentHasher()
    hasher.update(data)
    return hasher.finish()
