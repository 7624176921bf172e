"""What every benchmark does last: write its results to `--json PATH`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distributed_sac.config.atomic import atomic_write


def write_json(path: str | Path | None, results: Any) -> None:
    """`results` as indented JSON at `path` (folders created, written atomically); None or ""
    writes nothing (no `--json` given)."""
    if not path:
        return
    text = json.dumps(results, indent=2).encode()
    atomic_write(Path(path), lambda f: f.write(text))
