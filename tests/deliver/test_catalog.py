from __future__ import annotations

from sinolc_dist.deliver.catalog import Contents, chunk_ranges
from sinolc_dist.grid import ChunkId
from sinolc_dist.rundir.state import DONE, FAILED, NO_IMAGERY, PENDING, ChunkRecord


def test_chunk_ranges_are_row_by_row_runs_in_one_order():
    chunks = [ChunkId(4, 5), ChunkId(3, 9), ChunkId(3, 4), ChunkId(3, 6), ChunkId(3, 5), ChunkId(3, 5)]
    assert chunk_ranges(chunks) == "3:4-6,9 4:5"
    assert chunk_ranges(reversed(chunks)) == "3:4-6,9 4:5"
    assert chunk_ranges([]) == ""


def _record(col: int, status: str, coverage: float | None) -> ChunkRecord:
    return ChunkRecord(ChunkId(0, col), ("420000",), status, 1, None, None, coverage)


def test_imagery_share_counts_done_and_no_imagery_chunks_only():
    contents = Contents()
    for rec in (_record(0, DONE, None), _record(1, DONE, 0.5), _record(2, NO_IMAGERY, 0.0),
                _record(3, PENDING, 0.9), _record(4, FAILED, None)):
        contents.add(rec)
    assert contents.chunks == [ChunkId(0, 0), ChunkId(0, 1)] and contents.no_imagery == 1
    assert contents.imagery_share == 0.5  # (1 + 0.5 + 0) / 3
    assert contents.tags() == {"SINOLC_CHUNKS": "0:0-1", "SINOLC_CHUNK_COUNT": "2",
                               "SINOLC_NO_IMAGERY_CHUNKS": "1", "SINOLC_IMAGERY_SHARE": "0.500000"}
    assert Contents().imagery_share == 0.0
