"""Workflows and cluster profiles: named YAML files resolved once into frozen settings.

A workflow (``workflows/<name>.yaml``) holds the grid, the model and the run's
options; a cluster profile (``cluster/<name>.yaml``) holds the scheduler
settings.  Either is given by name (looked up in ``./workflows`` or
``./cluster`` first, then in the copies bundled with the package) or by path.
Unknown keys are errors, so a typo never passes silently.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from sinolc_dist.cluster.profiles import check_profile
from sinolc_dist.config_types import check_types, field_types
from sinolc_dist.errors import ConfigError
from sinolc_dist.files import file_sha256
from sinolc_dist.grid import Grid, geographic_grid, is_geographic, resolve_crs
from sinolc_dist.models import DEMO_CHECKPOINT
from sinolc_dist.models.checkpoint import ModelSpec, load_checkpoint
from sinolc_dist.models.loader import ModelRef

_PACKAGE = Path(__file__).resolve().parents[1]  # sinolc_dist/, beside the repo's workflows/ and cluster/
_SEARCH = {
    "workflows": [Path("workflows"), _PACKAGE / "_bundled" / "workflows", _PACKAGE.parent / "workflows"],
    "cluster": [Path("cluster"), _PACKAGE / "_bundled" / "cluster", _PACKAGE.parent / "cluster"],
}


def _find(kind: str, name: str) -> Path:
    """A YAML file by path or by name in the search folders."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml"):
        if p.is_file():
            return p
        raise ConfigError(f"{kind} file {p} does not exist")
    names: set[str] = set()
    for folder in _SEARCH[kind]:
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
        if folder.is_dir():
            names |= {f.stem for f in folder.glob("*.yaml")}
    close = difflib.get_close_matches(name, sorted(names), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"unknown {kind[:-1] if kind.endswith('s') else kind} {name!r}.{hint} "
        f"Known: {', '.join(sorted(names)) or 'none'}; or give a path to a .yaml file"
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings")
    return data


def _section(path: Path, data: dict[str, Any], name: str) -> dict[str, Any]:
    """A workflow's section as a dict (an empty key is no settings)."""
    section = data.get(name) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: {name}: expected a mapping of KEY: VALUE, got {section!r}")
    return dict(section)


def _check_keys(path: Path, section: str, data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(allowed), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{path}: unknown key(s) {unknown} in {section or 'the workflow'}{hint}; "
                          f"valid keys: {sorted(allowed)}")


@dataclass(frozen=True)
class RunOptions:
    """How the driver dispatches: retries, in-flight bound, order (:mod:`sinolc_dist.regions.order`)."""

    retries: int = 2
    max_in_flight: int = 8
    order: str = "province"

    def __post_init__(self) -> None:
        for key, low in (("retries", 0), ("max_in_flight", 1)):
            if getattr(self, key) < low:
                raise ConfigError(f"run.{key}: expected an integer >= {low}, got {getattr(self, key)!r}")


@dataclass(frozen=True)
class ModelOptions(ModelRef):
    """Which model and how to run it: the workflow's ``model:`` section.

    The worker-side :class:`ModelRef` (its fields and checks are the section's
    keys, less ``threads``, which comes from the cluster profile) with the
    checkpoint still as written: ``demo`` (the packaged one), a path, or unset.
    ``checkpoint`` is a sinolc checkpoint, a plain ``state_dict`` (with ``overrides``
    giving bands/classes/mean/std/width), a TorchScript file (``plugin: torchscript``)
    or the weights of a ``plugin: package.module:factory`` model; see
    ``sinolc_dist.models.plugins`` for the plug-in contract.
    """

    checkpoint: str | None = None  # type: ignore[assignment]

    @staticmethod
    def keys() -> set[str]:
        """The keys a workflow's ``model:`` section may have."""
        return {f.name for f in fields(ModelOptions)} - {"threads"}

    def checkpoint_path(self) -> str:
        """The model file (``demo`` = the packaged one); "" for a factory plug-in without weights."""
        if not self.checkpoint:
            if self.plugin and self.plugin != "torchscript":
                return ""
            raise ConfigError(
                "no model checkpoint: pass --checkpoint PATH or set model.checkpoint in the workflow"
            )
        return str(DEMO_CHECKPOINT if self.checkpoint == "demo" else Path(self.checkpoint).resolve())

    def identify(self) -> dict[str, Any]:
        """Check the model file now and describe the model for the frozen run configuration.

        A sinolc checkpoint or state_dict is read (``weights_only``) so a bad file
        fails before anything is written; its SHA-256 names the weights in outputs.
        """
        path = self.checkpoint_path()
        if self.plugin is None:
            sha = load_checkpoint(path, dict(self.overrides)).sha256
        elif path:
            if not Path(path).is_file():
                raise ConfigError(f"model file {path} does not exist")
            sha = file_sha256(path)
        else:
            sha = hashlib.sha256(self.plugin.encode()).hexdigest()
        frozen = {**asdict(self), "kwargs": dict(self.kwargs), "overrides": dict(self.overrides),
                  "checkpoint": path, "sha256": sha}
        del frozen["threads"]
        return json.loads(json.dumps(frozen))  # as read back from config.json (lists, not tuples)


def parse_pairs(items: Iterable[str], what: str, valid: set[str] | None = None) -> dict[str, Any]:
    """``KEY=VALUE`` strings (values read as YAML: ``bands=[r,g,b]``, ``width=128``) → a dict.

    ``what`` names the flag in errors; ``valid`` (when given) the keys it takes.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or (valid is not None and key not in valid):
            keys = f" with KEY one of {sorted(valid)}" if valid is not None else ""
            raise ConfigError(f"bad {what} {item!r}: expected KEY=VALUE{keys}")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"bad value in {what} {item!r}: {exc}") from None
    return out


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``--override KEY=VALUE`` strings → model spec fields (``bands``, ``classes``, ``mean``…), typed."""
    overrides = parse_pairs(items, "--override", set(SPEC_TYPES))
    check_types("--override", "", overrides, SPEC_TYPES)
    return overrides


#: Model spec fields that a workflow's ``model:`` section (and ``--arch``/``--width``) may set
#: directly; they join ``model.overrides``.
SPEC_KEYS = ("arch", "width", "legend")
#: What each model spec field takes as YAML reads it (``classes`` is checked by the legend).
SPEC_TYPES = field_types(ModelSpec, classes=Any)
#: What each key of a workflow's ``model:`` section takes (``kwargs``/``overrides`` as mappings).
MODEL_TYPES = {**field_types(ModelOptions, kwargs=Mapping | None, overrides=Mapping | None),
               **{k: SPEC_TYPES[k] for k in SPEC_KEYS}}


@dataclass(frozen=True)
class ModelChoice:
    """Model settings given on the command line (``run``, ``submit``): they replace or extend the workflow's.

    ``arch``/``width`` are spec fields (see :data:`SPEC_KEYS`); ``plugin``
    replaces ``model.plugin``; ``kwargs`` and ``overrides`` are merged into the
    workflow's, key by key.
    """

    arch: str | None = None
    width: int | None = None
    plugin: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def flags(self) -> list[str]:
        """The same choice as ``run`` flags (for the driver's batch script)."""
        out: list[str] = []
        for flag, value in (("--arch", self.arch), ("--width", self.width), ("--plugin", self.plugin)):
            if value is not None:
                out += [flag, str(value)]
        for flag, pairs in (("--kwargs", self.kwargs), ("--override", self.overrides)):
            for key, value in pairs.items():
                out += [flag, f"{key}={json.dumps(value)}"]
        return out

    def apply(self, model_cfg: dict[str, Any]) -> dict[str, Any]:
        """A workflow's ``model:`` section with this choice applied and spec keys moved into overrides."""
        cfg = dict(model_cfg)
        overrides = {**(cfg.get("overrides") or {}), **{k: cfg.pop(k) for k in SPEC_KEYS if k in cfg}}
        overrides.update({k: v for k, v in (("arch", self.arch), ("width", self.width)) if v is not None})
        overrides.update(self.overrides)
        legend = overrides.get("legend")
        if isinstance(legend, str) and Path(legend).suffix.lower() in (".yaml", ".yml", ".json"):
            overrides["legend"] = str(Path(legend).expanduser().resolve())  # workers read it too
        if self.plugin is not None:
            cfg["plugin"] = self.plugin
        if self.kwargs:
            cfg["kwargs"] = {**(cfg.get("kwargs") or {}), **self.kwargs}
        if overrides:
            cfg["overrides"] = overrides
        return cfg


def model_ref(frozen_model: dict[str, Any], threads: int) -> ModelRef:
    """The worker-side model reference from the frozen configuration's ``model`` entry."""
    fields_ = {k: v for k, v in frozen_model.items() if k != "sha256"}
    return ModelRef(**fields_, threads=threads)


@dataclass(frozen=True)
class Workflow:
    """A resolved workflow: grid, model and run options."""

    name: str
    description: str
    grid: Grid
    model: ModelOptions
    run: RunOptions
    mosaic_crs: str = "grid"


def load_workflow(name: str, checkpoint: str | None = None, choice: ModelChoice | None = None) -> Workflow:
    """Resolve a workflow by name or path.

    ``checkpoint`` replaces the file's; ``choice`` (the command line's
    ``--arch``, ``--width``, ``--plugin``, ``--kwargs``, ``--override``) is
    applied to its ``model:`` section — what a plain ``state_dict`` needs.
    """
    path = _find("workflows", name)
    data = _read_yaml(path)
    _check_keys(path, "", data, {"description", "grid", "model", "run", "mosaic"})
    grid_cfg = _section(path, data, "grid")
    _check_keys(path, "grid", grid_cfg, {f.name for f in fields(Grid)})
    check_types(str(path), "grid", grid_cfg, field_types(Grid))
    if "crs" in grid_cfg:
        grid_cfg["crs"] = resolve_crs(grid_cfg["crs"])
        if is_geographic(grid_cfg["crs"]):  # degrees: default origin/extent/pixel over China
            lonlat = geographic_grid()
            for key in ("resolution", "origin", "size"):
                grid_cfg.setdefault(key, getattr(lonlat, key))
    model_cfg = _section(path, data, "model")
    _check_keys(path, "model", model_cfg, ModelOptions.keys() | set(SPEC_KEYS))
    check_types(str(path), "model", model_cfg, MODEL_TYPES)
    _check_keys(path, "model.overrides", model_cfg.get("overrides") or {}, set(SPEC_TYPES))
    check_types(str(path), "model.overrides", model_cfg.get("overrides") or {}, SPEC_TYPES)
    model_cfg = (choice or ModelChoice()).apply(model_cfg)
    if checkpoint:
        model_cfg["checkpoint"] = checkpoint
    run_cfg = _section(path, data, "run")
    _check_keys(path, "run", run_cfg, {f.name for f in fields(RunOptions)})
    check_types(str(path), "run", run_cfg, field_types(RunOptions))
    mosaic_cfg = _section(path, data, "mosaic")
    _check_keys(path, "mosaic", mosaic_cfg, {"crs"})
    check_types(str(path), "mosaic", mosaic_cfg, {"crs": str})
    try:
        return Workflow(
            name=path.stem,
            description=str(data.get("description", "")),
            grid=Grid(**grid_cfg),
            model=ModelOptions(**model_cfg),
            run=RunOptions(**run_cfg),
            mosaic_crs=str(mosaic_cfg.get("crs", "grid")),
        )
    except (TypeError, ConfigError) as exc:  # a value of the right type but out of range
        raise ConfigError(f"{path}: {exc}") from None


def load_profile(name: str) -> tuple[str, dict[str, Any]]:
    """A cluster profile, its keys and values checked: ``(kind, settings)``; the single top key is the kind.

    Checked here, before any command writes a run directory: an unknown key, a
    value of the wrong type or out of range fails naming the file and the key.
    """
    path = _find("cluster", name)
    data = _read_yaml(path)
    if len(data) != 1:
        raise ConfigError(
            f"{path} must have one top-level key naming the cluster kind (e.g. 'local:')"
        )
    (kind, settings), = data.items()
    if settings is not None and not isinstance(settings, dict):
        raise ConfigError(f"{path}: {kind}: expected a mapping of KEY: VALUE, got {settings!r}")
    try:
        check_profile(str(kind), dict(settings or {}))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return str(kind), dict(settings or {})
