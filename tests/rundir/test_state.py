from __future__ import annotations

import re
import sqlite3

import pytest
from conftest import fill_disk

from sinolc_dist.errors import RunDirError
from sinolc_dist.grid import ChunkId
from sinolc_dist.rundir.state import (
    DONE,
    FAILED,
    JOB_ID_VARIABLES,
    NO_IMAGERY,
    PENDING,
    ChunkResult,
    StateReader,
    StateStore,
    worker_label,
)


def test_plan_results_and_reset(tmp_path):
    with StateStore(tmp_path / "s.sqlite") as s:
        assert s.add_chunks([(ChunkId(1, 2), ("420000",)), (ChunkId(0, 5), ("420000", "430000"))]) == 2
        assert s.add_chunks([(ChunkId(1, 2), ("420000",))]) == 0  # kept as it is
        s.record([ChunkResult(ChunkId(1, 2), True, "w1", 1.0, 2.0, "abc"),
                  ChunkResult(ChunkId(0, 5), False, "w2", error="boom", attempts=3)])
        assert s.count() == {PENDING: 0, DONE: 1, FAILED: 1, NO_IMAGERY: 0}
        assert s.chunk_ids(FAILED) == [ChunkId(0, 5)]
        recs = {r.chunk: r for r in s.records()}
        assert recs[ChunkId(0, 5)].attempts == 3
        assert recs[ChunkId(0, 5)].provinces == ("420000", "430000")
        assert recs[ChunkId(1, 2)].checksum == "abc"
        s.reset([ChunkId(0, 5)])
        assert s.chunk_ids(PENDING) == [ChunkId(0, 5)]
        assert [r.chunk for r in s.records()] == [ChunkId(0, 5), ChunkId(1, 2)]  # (row, col) order


def test_survives_reopen_and_uses_wal(tmp_path):
    with StateStore(tmp_path / "s.sqlite") as s:
        s.add_chunks([(ChunkId(0, 0), ())])
        s.record([ChunkResult(ChunkId(0, 0), True)])
    con = sqlite3.connect(tmp_path / "s.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with StateStore(tmp_path / "s.sqlite") as s:
        assert s.count()[DONE] == 1


def test_damaged_state_is_a_clear_error(tmp_path):
    (tmp_path / "s.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RunDirError, match="damaged"):
        StateStore(tmp_path / "s.sqlite")


def test_full_disk_is_a_clear_error_and_keeps_earlier_records(tmp_path):
    with StateStore(tmp_path / "s.sqlite") as s:
        s.add_chunks([(ChunkId(0, c), ("420000",)) for c in range(10)])
        s.record([ChunkResult(ChunkId(0, 0), True, checksum="a")])
        # Simulate a full file system: the database may not grow any more.
        pages = s._db.execute("PRAGMA page_count").fetchone()[0]
        s._db.execute(f"PRAGMA max_page_count = {pages}")
        big = [(ChunkId(1, c), ("420000",) * 200) for c in range(2000)]
        with pytest.raises(RunDirError, match="free space"):
            s.add_chunks(big)
        assert s.count()[DONE] == 1
        assert len(s.chunk_ids()) == 10


def test_summaries_agree_with_the_records(tmp_path):
    chunks = [(ChunkId(r, c), ("420000",) if c < 3 else ("420000", "430000"))
              for r in range(3) for c in range(5)]
    with StateStore(tmp_path / "s.sqlite") as s:
        s.add_chunks(chunks)
        s.record([ChunkResult(ChunkId(0, 1), True, checksum="a"),
                  ChunkResult(ChunkId(2, 4), True, checksum="b"),
                  ChunkResult(ChunkId(1, 3), False, error="OSError: corrupt shard\ntraceback"),
                  ChunkResult(ChunkId(1, 4), False, error="OSError: corrupt shard\ntraceback"),
                  ChunkResult(ChunkId(2, 0), False, error="ValueError: 4 bands")])
        records = list(s.records())
        groups = list(s.status_groups())
        # Every chunk once, per status and province, as the records say.
        assert sum(n for _, _, n in groups) == len(records) == 15
        for code in ("420000", "430000"):
            for status in (PENDING, DONE, FAILED):
                want = sum(1 for r in records if code in r.provinces and r.status == status)
                assert sum(n for codes, st, n in groups if code in codes and st == status) == want
        assert list(s.error_counts()) == [("OSError: corrupt shard\ntraceback", 2),
                                          ("ValueError: 4 bands", 1)]
        rows, cols, statuses = s.positions()
        assert list(zip(rows, cols, statuses, strict=True)) == [
            (r.chunk.row, r.chunk.col, r.status) for r in records]


def test_coverage_and_no_imagery(tmp_path):
    with StateStore(tmp_path / "s.sqlite") as s:
        s.add_chunks([(ChunkId(0, 0), ("420000",)), (ChunkId(0, 1), ("420000",))])
        s.set_coverage([(ChunkId(0, 0), 0.25)])
        s.mark_no_imagery([ChunkId(0, 1)])
        recs = {r.chunk: r for r in s.records()}
        assert recs[ChunkId(0, 0)].coverage == 0.25
        assert (recs[ChunkId(0, 1)].status, recs[ChunkId(0, 1)].coverage) == (NO_IMAGERY, 0.0)
        assert s.count()[NO_IMAGERY] == 1
        assert s.chunk_ids(PENDING) == [ChunkId(0, 0)]


def test_state_without_coverage_column_is_upgraded(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE chunks (id TEXT PRIMARY KEY, row INTEGER NOT NULL, col INTEGER NOT NULL, "
                     "provinces TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER "
                     "NOT NULL DEFAULT 0, worker TEXT, started REAL, finished REAL, seconds REAL, "
                     "error TEXT, checksum TEXT); INSERT INTO chunks(id, row, col, provinces) "
                     "VALUES ('0/0', 0, 0, '420000');")
    db.close()
    with StateStore(path) as s:
        assert [r.coverage for r in s.records()] == [None]


def test_a_state_on_a_full_disk_is_not_called_damaged(tmpfs):
    """Issue 15: a full disk was reported as a damaged state, with advice that would lose the run's record."""
    path = tmpfs / "state.sqlite"
    with StateStore(path) as s:
        s.add_chunks([(ChunkId(0, 0), ["420000"])])
    fill_disk(tmpfs)
    before = path.read_bytes()
    with pytest.raises(RunDirError) as err:
        StateStore(path)
    message = str(err.value)
    assert message.startswith(f"cannot open the state {path} (")
    assert "free space on its file system" in message
    assert "damaged" not in message and "move it aside" not in message
    assert path.read_bytes() == before
    (tmpfs / "filler").unlink()
    with StateStore(path) as s:  # space again: the same record, as it was
        assert s.count()[PENDING] == 1


def test_a_file_that_is_not_a_database_is_still_called_damaged(tmp_path):
    path = tmp_path / "state.sqlite"
    path.write_bytes(b"not a database, but 100 bytes of something else " * 2)
    with pytest.raises(RunDirError, match="is damaged or not a state database"):
        StateStore(path)


@pytest.mark.parametrize(("env", "label"), [
    ({}, r"[^ ]+:\d+"), ({"SLURM_JOB_ID": "81"}, r"job 81 on [^ ]+:\d+"),
    ({"PBS_JOBID": "77.server"}, r"job 77 on [^ ]+:\d+"), ({"JOB_ID": "5"}, r"job 5 on [^ ]+:\d+"),
])
def test_worker_label_names_the_batch_job(monkeypatch, env, label):
    for var in JOB_ID_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert re.fullmatch(label, worker_label())


def test_the_reader_sees_what_the_driver_records_and_writes_nothing(tmp_path):
    path = tmp_path / "state.sqlite"
    with StateStore(path) as state:
        state.add_chunks([(ChunkId(3, 4), ("420000",)), (ChunkId(3, 5), ("420000", "430000")),
                          (ChunkId(4, 4), ("420000",))])
        state.record([ChunkResult(ChunkId(3, 4), True, worker="w1", seconds=2.5),
                      ChunkResult(ChunkId(4, 4), False, worker="w2", error="boom")])
        with StateReader(path) as reader:  # while the driver holds the store open
            rows = sorted(reader.lattice_rows({"pending": 1, "done": 3}))
            cells = dict(reader.province_cells(3, 4, 2))
            assert reader.detail(ChunkId(4, 4)) == ("w2", "boom")
            assert reader.detail(ChunkId(9, 9)) == (None, None)
    # (row, col, code, attempts, seconds); failed is not among the codes asked: 0.
    assert [(r, c, code, s) for r, c, code, _, s in rows] == [(3, 4, 3, 2.5), (3, 5, 1, 0), (4, 4, 0, 0)]
    assert {k: sorted(v) for k, v in cells.items()} == {("420000",): [0, 2], ("420000", "430000"): [1]}


def test_a_reader_of_a_missing_state_names_it(tmp_path):
    with pytest.raises(RunDirError, match=r"cannot read the state .*missing\.sqlite.*--run-dir of a planned"):
        StateReader(tmp_path / "missing.sqlite")
    assert not (tmp_path / "missing.sqlite").exists()
