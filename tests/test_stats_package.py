"""harness.stats is a library of its own: importing it loads no other part of the harness."""

from __future__ import annotations

import json
import subprocess
import sys


def test_importing_harness_stats_loads_nothing_else_of_the_harness() -> None:
    code = (
        "import json, sys\n"
        "import harness.stats, harness.stats.calibration\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('harness'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    others = [m for m in loaded if m not in ("harness", "harness.stats") and not m.startswith("harness.stats.")]
    assert others == [], f"harness.stats imported {others}"


def test_public_api_is_exported() -> None:
    import harness.stats as S

    for name in S.__all__:
        assert callable(getattr(S, name)), name
