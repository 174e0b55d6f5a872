"""Where every benchmark reports: the JSON on stdout and in benchmarks/results/NAME.json."""

from __future__ import annotations

import json
from pathlib import Path


def report(name: str, result: object) -> Path:
    """Print ``result`` as JSON and write it to benchmarks/results/``name``.json."""
    text = json.dumps(result, indent=2)
    print(text)
    out = Path(__file__).parent / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text + "\n")
    return out
