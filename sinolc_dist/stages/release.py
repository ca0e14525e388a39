"""Streamed delivery: each province's COG and the national products, the moment its last chunk is done.

A national run dispatches province by province (:mod:`sinolc_dist.regions.order`);
:class:`Release` follows the chunk results the driver records and, when every
chunk of a province is done (or has no imagery), submits that province's COG on
the run's own cluster (:class:`~sinolc_dist.deliver.mosaics.Deliveries`)
without pausing the dispatch.  Each time COGs finish, the statistics,
quicklooks, national VRT and STAC catalog are rewritten, and ``logs/driver.log``
says which province was delivered and where its file is.  A province with a
failed chunk is not released (the mosaic stage at the end names it).  A run
resumed after a kill first releases the provinces already complete whose COG is
missing or older than their chunks, so a delivery cut short is finished.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from distributed import Client

from sinolc_dist.deliver.cog import CogReport
from sinolc_dist.deliver.mosaics import Deliveries
from sinolc_dist.regions.provinces import Province
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import DONE, NO_IMAGERY, ChunkResult, StateStore

log = logging.getLogger("sinolc_dist.stages.release")


class Release:
    """Provinces released as the driver records their last chunk; see the module docstring."""

    def __init__(self, rundir: RunDir, state: StateStore, client: Client) -> None:
        self.state = state
        self.deliveries = Deliveries(rundir, client)
        self.reports: list[CogReport] = []
        self._by_code = {p.adcode: p for p in self.deliveries.region.provinces}
        self._left: Counter[str] = Counter()
        for codes, status, n in state.status_groups():
            for code in codes:
                self._left[code] += 0 if status in (DONE, NO_IMAGERY) else n
        self._release([p for code, p in self._by_code.items() if code in self._left and not self._left[code]])

    def recorded(self, results: Sequence[ChunkResult]) -> None:
        """Count a batch of recorded results; release the provinces it completes; take finished COGs."""
        done = [r.chunk for r in results if r.ok]
        complete = []
        for codes in self.state.provinces_of(done).values():
            for code in codes:
                self._left[code] -= 1
                if self._left[code] == 0 and code in self._by_code:
                    complete.append(self._by_code[code])
        self._release(complete)
        self._collect(wait=False)

    def finish(self) -> list[CogReport]:
        """Wait for the COGs still being written; every report of the run's streamed deliveries."""
        self._collect(wait=True)
        return self.reports

    def _release(self, provinces: list[Province]) -> None:
        if provinces:
            names = ", ".join(f"{p.name_en} ({p.adcode})" for p in provinces)
            log.info("release: %s complete, delivering", names)
            for note in self.deliveries.release(provinces, self.state):
                log.info("release: %s", note)

    def _collect(self, wait: bool) -> None:
        reports, notes = self.deliveries.collect(wait=wait)
        self.reports += reports
        for note in notes:
            log.info("release: %s", note)
