"""Printing and saving benchmark results, shared by the bench_*.py scripts."""

from __future__ import annotations

import json
from typing import Optional


def report(results: dict, checks: list[tuple[str, bool]], json_path: Optional[str]) -> None:
    """Prints one line per figure and per target ("met" / "MISSED"); writes JSON if asked."""
    for key, value in results.items():
        if isinstance(value, dict):
            continue  # raw per-configuration detail: JSON only
        print(f"{key:32} {value:12.3f}" if isinstance(value, float) else f"{key:32} {value!s:>12}")
    for name, ok in checks:
        print(f"  {'met   ' if ok else 'MISSED'} {name}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=2)
