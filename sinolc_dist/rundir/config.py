"""The run's frozen configuration as one typed value: :class:`RunConfig`, read and written as ``run.json``.

``run.json`` is recorded once by the first ``sinolc-dist run`` and checked on
every resume (:meth:`~sinolc_dist.rundir.layout.RunDir.freeze`).  Its
on-disk form does not change with this class: :meth:`RunConfig.to_dict` gives
exactly the JSON object that :meth:`RunConfig.from_dict` read, for every file
written with the full set of keys; a file written before a key existed (no
``legend``, ``imagery``, ``zoom`` or ``mosaic_crs``) reads with that key's empty
default, and a key this version does not know is carried along unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from sinolc_dist.errors import ConfigError, RunDirError
from sinolc_dist.grid import Grid
from sinolc_dist.legend import SINOLC, Legend

#: Keys written only when set (a run id given by the user in run.json; the dispatch order, recorded
#: since runs dispatch province by province).
_OPTIONAL = ("run_id", "order")


@dataclass(frozen=True)
class RunConfig:
    """What a run directory was started with: grid, model, legend, region, imagery and dispatch settings.

    ``model`` is the frozen model entry as recorded (the workflow's ``model:``
    section with the checkpoint resolved and its ``sha256``): it names the
    weights in every output, so it travels as recorded.  ``cluster``,
    ``retries``, ``max_in_flight`` and ``order`` may change when a run is resumed; the
    rest is fixed for the run directory's life.
    """

    grid: Grid
    workflow: str | None = None
    model: Mapping[str, Any] = field(default_factory=dict)
    legend: Legend = SINOLC
    region: str = ""
    boundaries: str | None = None
    imagery: tuple[str, ...] = ()
    zoom: int | None = None
    cluster: str = "local"
    retries: int | None = None
    max_in_flight: int | None = None
    #: The COGs' CRS (``grid`` or e.g. ``EPSG:4326``); ``None`` for runs that recorded none (the grid's).
    mosaic_crs: str | None = None
    run_id: str | None = None
    #: The dispatch order in force (``province``, ``row-major`` or adcodes); may change on resume.
    order: str | None = None
    #: Keys of run.json this version does not know, kept as they are.
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``run.json`` (the format written before this class existed)."""
        data: dict[str, Any] = {
            "workflow": self.workflow,
            "grid": self.grid.to_dict(),
            "model": dict(self.model),
            "legend": self.legend.to_dict(),
            "region": self.region,
            "boundaries": self.boundaries,
            "imagery": list(self.imagery),
            "zoom": self.zoom,
            "cluster": self.cluster,
            "retries": self.retries,
            "max_in_flight": self.max_in_flight,
            "mosaic_crs": self.mosaic_crs,
        }
        data.update({k: getattr(self, k) for k in _OPTIONAL if getattr(self, k) is not None})
        return {**self.extra, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Read ``run.json``'s object; a key missing from an older file takes its empty default.

        Raises :class:`RunDirError` when there is no grid or a value has the wrong shape.
        """
        if "grid" not in data:
            raise RunDirError("the run configuration has no 'grid'")
        known = {f.name for f in fields(cls)} - {"extra"}
        try:
            values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
            values["grid"] = Grid.from_dict(dict(data["grid"]))
            values["legend"] = Legend.from_dict(data["legend"]) if data.get("legend") else SINOLC
            values["model"] = dict(data.get("model") or {})
            values["imagery"] = tuple(str(p) for p in data.get("imagery") or ())
            return cls(**values, extra={k: v for k, v in data.items() if k not in known})
        except (ConfigError, TypeError, ValueError, AttributeError) as exc:
            raise RunDirError(f"the run configuration is malformed ({exc})") from None

