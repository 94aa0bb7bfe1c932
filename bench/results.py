"""Writing bench/results.json: one JSON object, a section per benchmark.

Each run rewrites only the sections it ran, so benchmarks can be run one at a time.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results.json"


def write_section(name: str, section: dict[str, Any]) -> None:
    """Merge ``section`` into results.json under ``name`` (with machine info)."""
    data: dict[str, Any] = {}
    if RESULTS.exists():
        try:
            data = json.loads(RESULTS.read_text())
        except ValueError:
            data = {}
    section = dict(section)
    section["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    section["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    data[name] = section
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(RESULTS)
    print(json.dumps({name: section}, indent=2, sort_keys=True))
