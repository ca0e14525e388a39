"""The plan: which chunks a region needs, per province, and what the job will cost.

``make_plan`` selects the chunks (``plan_select``), and summarises per province
and in total: chunks, km² of land, pixels, input and output volume (raw and
expected compressed), GPU-hours and wall time for a number of GPUs at a given
throughput.  ``record_plan`` writes it into the run directory (``plan.json``
and the chunk rows of the state) so that ``run`` reuses it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from sinolc_dist.files import atomic_write_text
from sinolc_dist.grid import ChunkId, Grid
from sinolc_dist.regions.region import Region, resolve_region
from sinolc_dist.regions.select import ChunkSelection, select_chunks
from sinolc_dist.rundir.layout import RunDir
from sinolc_dist.rundir.state import StateStore

#: Pixels/s one GPU sustains through the engine: L2HNet width 128, bf16, on an H200
#: (benchmarks/results/engine-cuda-h200.json: 4.1e7; width 64: 6.0e7). Override with --throughput.
DEFAULT_GPU_PX_PER_S = 4.0e7
#: Expected compression ratios: RGB imagery in blosc-zstd, and the class map (146 GB for 9.6 TB).
INPUT_RATIO = 1.6
OUTPUT_RATIO = 60.0


@dataclass(frozen=True)
class PlanRow:
    """The cost of one province (or the total)."""

    adcode: str
    name: str
    chunks: int
    land_km2: float
    pixels: float
    input_gb: float
    input_gb_compressed: float
    output_gb: float
    output_gb_compressed: float
    gpu_hours: float


@dataclass(frozen=True)
class Plan:
    """A region's chunks on a grid, with the cost per province and in total."""

    region: Region
    grid: Grid
    selection: ChunkSelection
    rows: tuple[PlanRow, ...]
    total: PlanRow
    gpus: int
    px_per_s: float

    @property
    def wall_hours(self) -> float:
        """Expected wall time on ``gpus`` GPUs at ``px_per_s`` each."""
        return self.total.gpu_hours / max(1, self.gpus)

    @property
    def read_gb_per_s(self) -> float:
        """The imagery read rate (compressed GB/s, all workers together) that keeps ``gpus`` GPUs busy.

        The I/O bound beside the GPU time: a filesystem slower than this makes
        the job bound by reading, and the wall time grows in proportion.
        """
        return self.total.input_gb_compressed / max(self.wall_hours * 3600, 1e-9)

    def chunks(self) -> list[tuple[ChunkId, tuple[str, ...]]]:
        """Every selected chunk with the provinces it touches, in (row, col) order."""
        sel = self.selection
        return [(ChunkId(int(r), int(c)), tuple(p))
                for r, c, p in zip(sel.rows, sel.cols, sel.provinces, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-chunk list: that lives in the state)."""
        return {
            "region": self.region.spec,
            "region_kind": self.region.kind,
            "boundary_source": self.region.source,
            "grid": self.grid.to_dict(),
            "gpus": self.gpus,
            "px_per_s_per_gpu": self.px_per_s,
            "wall_hours": self.wall_hours,
            "read_gb_per_s": self.read_gb_per_s,
            "provinces": [asdict(r) for r in self.rows],
            "total": asdict(self.total),
        }


def _row(adcode: str, name: str, chunks: int, land_km2: float, grid: Grid, bands: int,
         px_per_s: float) -> PlanRow:
    pixels = land_km2 * 1e6 / grid.nominal_pixel_m2
    return PlanRow(
        adcode=adcode, name=name, chunks=chunks, land_km2=land_km2, pixels=pixels,
        input_gb=pixels * bands / 1e9, input_gb_compressed=pixels * bands / 1e9 / INPUT_RATIO,
        output_gb=pixels / 1e9, output_gb_compressed=pixels / 1e9 / OUTPUT_RATIO,
        gpu_hours=pixels / px_per_s / 3600.0,
    )


def make_plan(
    region_spec: str, grid: Grid, boundaries: str | None = None, gpus: int = 1,
    px_per_s: float = DEFAULT_GPU_PX_PER_S, bands: int = 3,
) -> Plan:
    """Resolve a region, select its chunks on ``grid`` and cost them."""
    region = resolve_region(region_spec, boundaries)
    sel = select_chunks(grid, region, boundaries)
    names = {p.adcode: f"{p.name_en} ({p.name_zh})" for p in region.provinces}
    rows = tuple(
        _row(code, names.get(code, code), sel.chunk_count_by_province.get(code, 0),
             sel.land_km2.get(code, 0.0), grid, bands, px_per_s)
        for code in sorted(sel.land_km2)
    )
    total = _row("total", region.spec, len(sel.rows), sum(sel.land_km2.values()), grid, bands,
                 px_per_s)
    return Plan(region, grid, sel, rows, total, gpus, px_per_s)


def record_plan(plan: Plan, rundir: RunDir) -> int:
    """Write ``plan.json`` and add the plan's chunks to the state; returns chunks added."""
    atomic_write_text(rundir.plan, json.dumps(plan.to_dict(), indent=2))
    with StateStore(rundir.state) as state:
        added = state.add_chunks(plan.chunks())
        state.set_meta("plan_region", plan.region.spec)
        state.set_meta("plan_grid", plan.grid.fingerprint)
    return added
