"""How every benchmark records its result: one JSON file under ``benchmarks/results/``.

Each file carries the date and the command that reproduces it, so a figure
quoted in the README or an issue note can be traced to its run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def save(result: dict[str, Any], out: str | Path | None, default_name: str) -> Path:
    """Write ``result`` to ``out`` (else ``results/<default_name>``) with its date and command.

    ``date`` and ``command`` are added unless the result has them already (a
    benchmark that saves after every row keeps its start date).  Prints and
    returns the path.
    """
    result.setdefault("date", time.strftime("%Y-%m-%d %H:%M:%S"))
    result.setdefault("command", " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]))
    path = Path(out) if out else RESULTS / default_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return path
