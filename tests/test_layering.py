"""The house's import rule: each wing imports only the wings below it (README, "Design")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sinolc_dist"

#: The foundation: small modules every wing may use.
FOUNDATION = {"__init__", "grid", "errors", "legend", "config_types", "gdal_errors", "files", "cog_layout"}
#: What each wing may import besides the foundation and itself.
ALLOWED: dict[str, set[str]] = {
    "foundation": set(),
    "rundir": set(),
    "regions": {"rundir"},
    "imagery": set(),
    "models": set(),
    "engine": {"rundir", "imagery", "models"},
    "deliver": {"rundir", "regions"},
    "cluster": {"rundir"},
    "audit": set(),
    "validate": {"rundir", "regions", "deliver"},
    "stages": {"rundir", "regions", "imagery", "models", "engine", "deliver", "cluster", "audit",
               "validate"},
    "cli": {"rundir", "regions", "imagery", "models", "engine", "deliver", "cluster", "stages", "audit",
            "validate"},
}
CLI = {"cli", "model_flags", "demo", "cli_audit", "cli_validate"}


def wing(parts: list[str]) -> str:
    """The wing of a module given by its path inside the package (``["stages", "infer"]``)."""
    head = parts[0]
    if head in CLI:
        return "cli"
    if head in FOUNDATION:
        return "foundation"
    return head  # a new top-level module is a wing of its own until it is placed above


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name).is_dir()


def imported(tree: ast.AST) -> set[tuple[str, ...]]:
    """Every ``sinolc_dist`` module a module imports (at any depth, lazy imports too)."""
    found: set[tuple[str, ...]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sinolc_dist":
            base = tuple(node.module.split(".")[1:])
            if base:
                found.add(base)
            else:  # from sinolc_dist import x: x is a module or a name of the package root
                found.update((a.name,) if _is_module(a.name) else ("__init__",) for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(tuple(a.name.split(".")[1:]) for a in node.names
                         if a.name.startswith("sinolc_dist.") and a.name.count("."))
    return found


def arrows() -> list[tuple[str, str, str]]:
    """(importing module, its wing, imported wing) for every import across wings."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        own = wing(parts)
        for target in imported(ast.parse(path.read_text(encoding="utf-8"))):
            other = wing(list(target))
            if other != own:
                out.append(("/".join(parts), own, other))
    return out


def test_every_module_belongs_to_a_known_wing():
    modules = [list(p.relative_to(PACKAGE).with_suffix("").parts) for p in PACKAGE.rglob("*.py")]
    assert {wing(m) for m in modules} <= set(ALLOWED)


def test_every_wing_imports_only_the_wings_below_it():
    wrong = sorted({f"{m} ({w}) imports {o}" for m, w, o in arrows()
                    if o != "foundation" and o not in ALLOWED[w]})
    assert not wrong, "\n".join(wrong)


def test_the_foundation_and_the_worker_side_wings_import_no_stage_or_cluster():
    low = {"foundation", "rundir", "regions", "imagery", "models", "engine", "deliver", "audit", "validate"}
    assert not [a for a in arrows() if a[1] in low and a[2] in {"stages", "cluster", "cli"}]


@pytest.mark.parametrize("source", [
    "from sinolc_dist.stages.infer import run", "from sinolc_dist import stages",
    "import sinolc_dist.cluster.core",
])
def test_the_check_sees_each_import_form(source):
    target = next(iter(imported(ast.parse(source))))
    assert wing(list(target)) in {"stages", "cluster"}


def test_the_cluster_package_itself_imports_nothing():
    # Worker processes import sinolc_dist.cluster.worker_logs: the package must not pull dask-jobqueue in.
    assert not imported(ast.parse((PACKAGE / "cluster" / "__init__.py").read_text(encoding="utf-8")))


def test_test_files_have_unique_names():
    # pytest imports test files by their basename (no __init__.py in tests/): two alike would not collect.
    names = [p.name for p in (PACKAGE.parent / "tests").rglob("test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


def test_there_is_one_conftest():
    # Worker processes import `conftest` by name: a second conftest.py would shadow tests/conftest.py there.
    assert [p.relative_to(PACKAGE.parent) for p in (PACKAGE.parent / "tests").rglob("conftest.py")] == \
        [Path("tests/conftest.py")]
