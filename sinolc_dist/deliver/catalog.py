"""What each provincial COG holds: the chunks and the share of them imagery covered.

A COG's bytes depend only on its pixels and the run's frozen configuration, so
two runs of one configuration give byte-identical files: its tags name the
chunks it holds (:class:`Contents`: ``SINOLC_CHUNKS`` and counts) and the share
of them that imagery covered, never a date, host or path.  Those go to its STAC
Item beside it (``mosaics/<name>.json``, :mod:`sinolc_dist.deliver.stac`),
rewritten with the run's catalog after each province.

``SINOLC_CHUNKS`` lists the chunks row by row, ``<row>:<col>[-<col>],…`` with
rows separated by spaces: ``"3:4-6,9 4:5"`` is chunks c/3/4, c/3/5, c/3/6, c/3/9 and c/4/5.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from sinolc_dist.grid import ChunkId
from sinolc_dist.rundir.state import DONE, NO_IMAGERY, ChunkRecord

#: Tags of :meth:`Contents.tags`.
CHUNKS_TAG, COUNT_TAG, NO_IMAGERY_TAG, SHARE_TAG = (
    "SINOLC_CHUNKS", "SINOLC_CHUNK_COUNT", "SINOLC_NO_IMAGERY_CHUNKS", "SINOLC_IMAGERY_SHARE")


def chunk_ranges(chunks: Iterable[ChunkId]) -> str:
    """The chunks in the compact row-by-row form of ``SINOLC_CHUNKS`` (sorted, deterministic)."""
    rows = []
    for row, group in itertools.groupby(sorted(set(chunks)), key=lambda c: c.row):
        cols = [c.col for c in group]
        runs = []
        for _, run in itertools.groupby(enumerate(cols), key=lambda ic: ic[1] - ic[0]):
            first, *rest = (col for _, col in run)
            runs.append(f"{first}-{rest[-1]}" if rest else str(first))
        rows.append(f"{row}:{','.join(runs)}")
    return " ".join(rows)


@dataclass
class Contents:
    """The chunks one province's file holds, and how much of them imagery covered.

    The share counts the done chunks (each by its recorded ``coverage``; one
    without a value counts as fully covered) and the chunks recorded
    ``no-imagery`` (0), over the number of both: the share of the file's chunk
    area that had imagery.  Chunks pending or failed are not in the file
    (``SINOLC_COMPLETE`` says so) and do not count.
    """

    chunks: list[ChunkId] = field(default_factory=list)
    covered: float = 0.0
    no_imagery: int = 0

    def add(self, rec: ChunkRecord) -> None:
        """Count one of the province's chunk records."""
        if rec.status == DONE:
            self.chunks.append(rec.chunk)
            self.covered += 1.0 if rec.coverage is None else rec.coverage
        elif rec.status == NO_IMAGERY:
            self.no_imagery += 1

    @property
    def imagery_share(self) -> float:
        """Share (0–1) of the counted chunks' pixels that imagery covered."""
        counted = len(self.chunks) + self.no_imagery
        return self.covered / counted if counted else 0.0

    def tags(self) -> dict[str, str]:
        """The COG tags: which chunks, how many, how many without imagery, the imagery share."""
        return {CHUNKS_TAG: chunk_ranges(self.chunks), COUNT_TAG: str(len(self.chunks)),
                NO_IMAGERY_TAG: str(self.no_imagery), SHARE_TAG: f"{self.imagery_share:.6f}"}
