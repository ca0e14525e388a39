"""``sinolc-dist validate`` and ``sinolc-dist sample``: thin commands over :mod:`sinolc_dist.validate`.

Results go under ``<run-dir>/validation/`` (``points/``, ``against/``,
``stats/``; a sample to ``validation/sample.gpkg`` unless ``--out``) and are
printed as tables, or as the JSON report with ``--json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from sinolc_dist.cluster.core import open_cluster
from sinolc_dist.errors import ConfigError
from sinolc_dist.legend import Legend
from sinolc_dist.rundir.layout import DEFAULT_RUN_DIR, RunDir
from sinolc_dist.stages.workflow import load_profile
from sinolc_dist.validate.against import RESAMPLE, cluster_runner, validate_against, write_against_results
from sinolc_dist.validate.metrics import Accuracy
from sinolc_dist.validate.official import compare_stats, write_stats_results
from sinolc_dist.validate.points import STRATA, scope_name, validate_points, write_points_results
from sinolc_dist.validate.runmap import RunMap, validation_folder
from sinolc_dist.validate.sample import SAMPLE_STRATA, draw_sample, write_sample

out = Console()
#: Blocks in flight on a cluster when the run records no ``max_in_flight``.
DEFAULT_IN_FLIGHT = 16

RUN_DIR = click.option("--run-dir", type=click.Path(path_type=Path), default=DEFAULT_RUN_DIR,
                       show_default=True, help="Run directory to validate.")


def _pct(value: float) -> str:
    """A share as a percentage with 2 decimals (a dash when undefined)."""
    return "–" if value is None or math.isnan(value) else f"{value * 100:.2f}"


def _accuracy_table(title: str, scopes: dict[str, Accuracy]) -> Table:
    """n, OA, its interval and kappa per scope (national, then provinces)."""
    table = Table(title=title)
    for col in ("scope", "n", "OA %", "95 % CI", "kappa"):
        table.add_column(col, justify="left" if col == "scope" else "right")
    for scope, a in scopes.items():
        lo, hi = a.oa_ci95
        table.add_row(scope_name(scope), f"{a.n:,.0f}", _pct(a.oa), f"{_pct(lo)}–{_pct(hi)}",
                      "–" if math.isnan(a.kappa) else f"{a.kappa:.4f}")
    return table


def _class_table(acc: Accuracy, legend: Legend) -> Table:
    """User's and producer's accuracy and F1 of every class that was mapped or labelled."""
    table = Table(title="per class (national)")
    for col in ("class", "mapped", "reference", "user's %", "producer's %", "F1"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for i, code in enumerate(acc.codes):
        mapped, ref = acc.matrix[i].sum(), acc.matrix[:, i].sum()
        if mapped or ref:
            table.add_row(legend.name_of(code), f"{mapped:,.0f}", f"{ref:,.0f}", _pct(acc.users[i]),
                          _pct(acc.producers[i]), "–" if math.isnan(acc.f1[i]) else f"{acc.f1[i]:.4f}")
    return table


def _print(as_json: bool, report: Path, tables: list[Any], lines: list[str], paths: list[Path]) -> None:
    """The JSON report, or the tables, then what was written."""
    if as_json:
        click.echo(report.read_text(encoding="utf-8"))
        return
    for table in tables:
        out.print(table)
    for line in lines:
        out.print(line, markup=False, highlight=False)
    out.print(f"written: {', '.join(str(p) for p in paths)}", markup=False, highlight=False, soft_wrap=True)


@click.command()
@RUN_DIR
@click.option("--points", type=click.Path(path_type=Path), default=None,
              help="Reference points: .geojson, .gpkg or .csv (lon/lat, or x/y with --crs), with a "
                   "class column.")
@click.option("--against", type=click.Path(path_type=Path), default=None,
              help="Another classified raster (any CRS and resolution) to compare with.")
@click.option("--stats", "official", type=click.Path(path_type=Path), default=None,
              help="Official km² per province and class (.csv: province,class,km2 or one column per class).")
@click.option("--crs", default=None, help="CRS of the points (x/y columns, or to override the file's).")
@click.option("--class-column", default=None, help="The points' class column. [default: class or label]")
@click.option("--class-map", type=click.Path(path_type=Path), default=None,
              help="YAML mapping another legend's labels/codes to the run's classes (their: ours).")
@click.option("--strata", type=click.Choice(STRATA), default="none", show_default=True,
              help="How the points were drawn: 'class' adds the area-weighted (Olofsson et al. 2014) "
                   "estimate.")
@click.option("--resample", type=click.Choice(RESAMPLE), default="mode", show_default=True,
              help="--against: our map by mode onto theirs, or theirs by nearest onto ours.")
@click.option("--cluster", default=None,
              help="--against: read the blocks on this cluster profile (local, slurm, pbs, sge or a .yaml). "
                   "[default: in this process]")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of tables.")
def validate(run_dir: Path, points: Path | None, against: Path | None, official: Path | None,
             crs: str | None, class_column: str | None, class_map: Path | None, strata: str, resample: str,
             cluster: str | None, as_json: bool) -> None:
    """Accuracy of a run: at reference points, against another map, or against official statistics.

    Results go to RUN_DIR/validation/points, /against or /stats: a CSV per table,
    report.json and (points, against) confusion.png; --against also writes an
    agreement map (agreement.tif: 1 agree, 2 disagree).
    """
    given = [name for name, v in (("--points", points), ("--against", against), ("--stats", official)) if v]
    if cluster and not against:
        raise ConfigError("--cluster applies to --against only: points and statistics are read in this "
                          "process; leave --cluster out")
    if len(given) != 1:
        raise ConfigError("validate needs exactly one of --points FILE, --against MAP.tif or --stats FILE.csv"
                          + (f" (got {', '.join(given)})" if given else ""))
    rundir = RunDir(run_dir).require()
    folder = validation_folder(rundir)
    if points:
        _points(rundir, folder / "points", points, crs, class_column, class_map, strata, as_json)
    elif against:
        _against(rundir, folder / "against", against, class_map, resample, cluster, as_json)
    else:
        _official(rundir, folder / "stats", official, class_map, as_json)


def _points(rundir: RunDir, folder: Path, points: Path, crs: str | None, class_column: str | None,
            class_map: Path | None, strata: str, as_json: bool) -> None:
    """``validate --points``: figures, files, tables."""
    legend = rundir.read_config().legend
    res = validate_points(rundir, points, crs, class_column, class_map, strata)
    paths = write_points_results(folder, res, legend)
    counts = res.counts()
    lines = [f"points: {counts['points']}, used: {counts['used']}; left out: " + (", ".join(
        f"{k} {v}" for k, v in counts.items() if k not in ("points", "used") and v) or "none")]
    if res.stratified is not None:
        lo, hi = res.stratified.oa_ci95
        lines.append(f"stratified (area-weighted) OA: {_pct(res.stratified.oa)} % "
                     f"(95 % CI {_pct(lo)}–{_pct(hi)}); class areas in stratified.csv")
    if res.unproducible:
        lines.append(f"reference classes the model never writes: {list(res.unproducible)}")
    _print(as_json, folder / "report.json",
           [_accuracy_table("accuracy at the points", res.scopes), _class_table(res.national, legend)],
           lines, paths)


def _against(rundir: RunDir, folder: Path, against: Path, class_map: Path | None, resample: str,
             cluster: str | None, as_json: bool) -> None:
    """``validate --against``: figures, agreement map, files, tables."""
    config = rundir.read_config()
    legend = config.legend
    if cluster:
        kind, settings = load_profile(cluster)
        with open_cluster(kind, settings, rundir.root) as client:
            runner = cluster_runner(client, config.max_in_flight or DEFAULT_IN_FLIGHT)
            res = validate_against(rundir, against, folder, class_map, resample, runner)
    else:
        res = validate_against(rundir, against, folder, class_map, resample)
    paths = write_against_results(folder, res, legend)
    lines = ["pixels not compared: " + ", ".join(f"{k} {v:,}" for k, v in res.skipped_px.items())]
    _print(as_json, folder / "report.json",
           [_accuracy_table(f"agreement with {against.name} (pixels, {resample})", res.scopes),
            _class_table(res.scopes["national"], legend)], lines, paths)


def _official(rundir: RunDir, folder: Path, official: Path, class_map: Path | None, as_json: bool) -> None:
    """``validate --stats``: misestimation rates, files, table."""
    legend = rundir.read_config().legend
    res = compare_stats(rundir, official, legend, class_map)
    paths = write_stats_results(folder, res, legend)
    table = Table(title="misestimation rate: Σ|ours − official| / Σ official")
    for col in ("province", "rate %"):
        table.add_column(col)
    for adcode in res.official:
        table.add_row(scope_name(adcode), _pct(res.rate(adcode)))
    table.add_row("overall", _pct(res.overall))
    _print(as_json, folder / "report.json", [table], [], paths)


@click.command()
@RUN_DIR
@click.option("--n", "n", type=click.IntRange(min=1), required=True, help="Number of points to draw.")
@click.option("--strata", type=click.Choice(SAMPLE_STRATA), default="none", show_default=True,
              help="Simple random, by map class (for --strata class validation) or by province.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed: the same seed, the same points.")
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=None,
              help="Points file to write (.gpkg or .csv). [default: RUN_DIR/validation/sample.gpkg]")
@click.option("--json", "as_json", is_flag=True, help="Print the design as JSON.")
def sample(run_dir: Path, n: int, strata: str, seed: int, out_path: Path | None, as_json: bool) -> None:
    """Draw reproducible random points from a run's done chunks for visual interpretation.

    The file has an empty 'label' column to fill in; then `sinolc-dist validate --points FILE`
    (with --strata class for a class-stratified sample).
    """
    rundir = RunDir(run_dir).require()
    rm = RunMap.open(rundir)
    drawn = draw_sample(rm, n, strata, seed)
    path, design = write_sample(out_path or validation_folder(rundir) / "sample.gpkg", drawn, rm)
    if as_json:
        click.echo(json.dumps({**drawn.design(), "points": str(path)}, indent=2))
        return
    table = Table(title=f"sample of {int(drawn.drawn.sum())} points (seed {seed})")
    for col in ("stratum", "pixels", "points"):
        table.add_column(col, justify="left" if col == "stratum" else "right")
    for name, pop, k in zip(drawn.strata, drawn.population, drawn.drawn, strict=True):
        if pop:
            table.add_row(name, f"{pop:,}", f"{k:,}")
    out.print(table)
    out.print(f"written: {path}, {design}", markup=False, highlight=False, soft_wrap=True)
