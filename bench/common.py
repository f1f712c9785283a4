"""What the benches share: start one `vhostlm run` and read its results.json.

Each bench runs vhostlm as a user would (a child process, its own run directory) so that a
run's set-up and teardown are in its wall time and a crashed run cannot take the bench down.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VHOSTLM = (sys.executable, "-m", "vhostlm")  # the CLI, from the interpreter running the bench


@dataclass(frozen=True)
class RunOutcome:
    """One `vhostlm run`: its wall time, exit code, results (None if it wrote none), output."""

    wall_s: float
    returncode: int
    results: dict[str, Any] | None
    stdout: str
    stderr: str


def run_vhostlm(args: Sequence[str], out: Path, command: Sequence[str] = VHOSTLM) -> RunOutcome:
    """`COMMAND run ARGS --output OUT` in a child process; its wall time and results.json."""
    start = time.monotonic()
    proc = subprocess.run(
        [*command, "run", *args, "--output", str(out)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    wall = time.monotonic() - start
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else None
    return RunOutcome(wall, proc.returncode, results, proc.stdout, proc.stderr)


def boot_s(case: dict[str, Any]) -> float:
    """The host guest's boot to shell, as the case measured it (guest_boots' boot_s)."""
    for step in case["steps"]:
        if "boot_s" in step.get("figures", {}):
            return float(step["figures"]["boot_s"])
    return 0.0
