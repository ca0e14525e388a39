"""``sinolc-dist audit`` and ``sinolc-dist repair``: thin commands around :mod:`sinolc_dist.audit`.

Registered on the main group by :mod:`sinolc_dist.cli`; this module does not
import it (the options it needs are its own).  Expected failures are
:class:`~sinolc_dist.errors.SinolcError` subclasses, printed by the CLI's
``main`` as one ``error: …`` line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from sinolc_dist.audit.repair import FORMATS, parse_strip, repair
from sinolc_dist.audit.report import AuditReport, audit
from sinolc_dist.audit.source import expand_vrts

out = Console()

MIN_WIDTH = click.option("--min-width", type=click.IntRange(min=4), default=16, show_default=True,
                         help="Narrowest duplicated strip searched for, px.")
AS_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _map_for(map_path: Path | None, file: Path, several: bool) -> Path | None:
    """The quicklook path of one file: ``--map`` itself, or ``<stem>-<file stem>.png`` for several files."""
    if map_path is None or not several:
        return map_path
    return map_path.with_name(f"{map_path.stem}-{file.stem}{map_path.suffix or '.png'}")


def _print(report: AuditReport) -> None:
    """One file's findings as a table (or a line saying it is clean)."""
    if not report.findings:
        out.print(f"{report.path}: clean (no duplicated strip"
                  f"{'' if report.tile is None else f', no seam on the {report.tile} px tile grid'}; "
                  f"{report.width}x{report.height} px in {report.seconds:.1f} s)")
    else:
        table = Table(title=f"{report.path} ({report.width}x{report.height} px)", title_justify="left")
        for name in ("finding", "axis", "pixels", "width/shift", "similarity/score"):
            table.add_column(name)
        for row in report.table():
            table.add_row(*row)
        out.print(table)
    if report.map_path is not None:
        out.print(f"map: {report.map_path}")


@click.command("audit")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--tile", type=click.IntRange(min=16), default=None,
              help="Tile side (px) of the grid seams are checked against. [default: the file's own tiles]")
@MIN_WIDTH
@click.option("--max-width", type=click.IntRange(min=4), default=None,
              help="Widest duplicated strip searched for, px. [default: half the file's side]")
@AS_JSON
@click.option("--map", "map_path", type=click.Path(path_type=Path), default=None,
              help="Write a quicklook PNG marking the strips and seams (one per file: NAME-<file>.png).")
def audit_command(files: tuple[Path, ...], tile: int | None, min_width: int, max_width: int | None,
                  as_json: bool, map_path: Path | None) -> None:
    """Find duplicated strips and tile seams in single-band class GeoTIFFs, COGs or VRTs.

    A duplicated strip is a run of columns (rows) that repeats the run just before
    it, as tile stitching left in SinoLC-1's released files; each is reported with
    its exact start, width and similarity (copies may differ in a few percent of
    pixels).  Seams are tiles offset by whole pixels from a neighbour, or nodata
    slivers between tiles.  A VRT (the national one) is audited file by file.
    Exits 1 when anything was found, 0 when every file is clean.
    """
    paths = expand_vrts(files)
    reports = [audit(f, tile, min_width, max_width, _map_for(map_path, f, len(paths) > 1)) for f in paths]
    if as_json:
        out.print_json(json.dumps([r.to_dict() for r in reports]))
    else:
        for report in reports:
            _print(report)
    if any(r.findings for r in reports):
        sys.exit(1)


@click.command("repair")
@click.argument("file", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--strip", "strips", multiple=True,
              help="Remove this strip instead of those audit finds: columns:START:END or rows:START:END "
                   "(0-based, END excluded; repeatable).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="cog", show_default=True,
              help="Write a Cloud-Optimised GeoTIFF or a tiled GeoTIFF.")
@MIN_WIDTH
@AS_JSON
def repair_command(file: Path, output: Path, strips: tuple[str, ...], fmt: str, min_width: int,
                   as_json: bool) -> None:
    """Remove duplicated strips from FILE and close the gaps by shifting; write OUTPUT.

    The strips are those `audit` finds, or the ones given with --strip. The parts
    right of (below) each strip move inward; the top-left origin, CRS, pixel size,
    nodata, dtype, colour table, attribute table (.aux.xml), band and dataset tags
    are kept. Written beside OUTPUT, then renamed into place (OUTPUT may be FILE).
    """
    given = [parse_strip(s) for s in strips] or None
    report = repair(file, output, given, fmt, min_width)
    if report is None:
        out.print(f"{file}: no duplicated strip found; nothing to repair, {output} not written")
        return
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    removed = ", ".join(f"{s.axis} [{s.start}, {s.end})" for s in report.removed)
    out.print(f"wrote {report.path} ({report.format}, {report.width}x{report.height} px, "
              f"{report.bytes / 2**20:.1f} MiB in {report.seconds:.1f} s): removed {removed}")
