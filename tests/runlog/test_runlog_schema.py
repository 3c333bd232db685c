"""The histogram blob format of schema 1: sparse encoding round-trips, the first (zlib) encoding
still reads, and damaged blobs are refused with a clear error."""

import zlib

import numpy as np
import pytest

from gradwatch.trainer.runlog import schema


def _counts(nonzero: dict) -> np.ndarray:
    counts = np.zeros(schema.HIST_LEN, dtype=np.int64)
    for index, value in nonzero.items():
        counts[index] = value
    return counts


@pytest.mark.parametrize(
    "counts",
    [
        _counts({}),
        _counts({0: 1, schema.HIST_ZERO_INDEX: 4096, schema.HIST_LEN - 1: 7}),
        _counts({3: 70_000, 100: 1}),  # above uint16: the 32-bit variant
        np.arange(schema.HIST_LEN),
    ],
)
def test_sparse_encoding_round_trips(counts):
    blob = schema.encode_hist(counts)
    assert np.array_equal(schema.decode_hist(blob), counts)
    assert [schema.decode_hist(b).tolist() for b in schema.encode_hists(np.stack([counts, counts[::-1]]))] == [
        counts.tolist(), counts[::-1].tolist()]


def test_batch_encoding_equals_row_by_row_encoding_for_mixed_rows():
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 9, (40, schema.HIST_LEN)) * rng.integers(0, 2, (40, schema.HIST_LEN))
    rows[4] = 0  # an empty histogram between full ones
    rows[7, 11] = 70_000  # one row needs 32-bit counts; its neighbours keep 16-bit ones
    blobs = schema.encode_hists(rows)
    assert blobs == [schema.encode_hist(row) for row in rows]
    assert blobs[7][0] == schema.HIST_FORMAT_SPARSE32 and blobs[6][0] == schema.HIST_FORMAT_SPARSE16
    assert schema.encode_hists(np.zeros((0, schema.HIST_LEN))) == []


def test_sparse_blob_is_small_for_a_typical_histogram():
    counts = _counts({i: 100 + i for i in range(70, 90)})  # 20 occupied bins
    assert len(schema.encode_hist(counts)) == 1 + 17 + 2 * 20


def test_first_zlib_encoding_still_reads():
    counts = np.arange(schema.HIST_LEN)
    legacy = zlib.compress(counts.astype("<u4").tobytes(), 6)
    assert np.array_equal(schema.decode_hist(legacy), counts)


@pytest.mark.parametrize("blob", [b"", b"\x09abc", bytes([schema.HIST_FORMAT_SPARSE16]) + b"\xff" * 17 + b"\x01\x00"])
def test_damaged_blobs_are_refused(blob):
    with pytest.raises(ValueError, match="corrupt histogram blob"):
        schema.decode_hist(blob)


def test_wrong_length_is_refused_on_encode():
    with pytest.raises(ValueError, match=f"{schema.HIST_LEN} counts"):
        schema.encode_hist(np.zeros(10))
