#!/usr/bin/env python3
"""Soak: many ping-pong live migrations with probe traffic, then what was left behind.

Runs `vhostlm run --case CASE --round-trips K` (2K migrations each, every one measured)
until --migrations migrations were made, and prints the number of failed migrations
(must be 0), the outage p50/p95/max over every leg, QEMU's downtime alongside, and the
leftovers of every run afterwards (processes, namespaces, runtime directories, mounts,
hugepages: must be 0). Exit 0 only when both are 0. Run as root after `make image`:
`python bench/soak.py [--migrations 50] [--round-trips 5]`.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vhostlm.addresses import PROBE_PPS
from vhostlm.testbed.cleanup import leftovers
from vhostlm.testbed.hugepages import baseline as hugepages_baseline

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (`pct` in 0..100) of `values`."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def migration_steps(case: dict[str, Any]) -> list[str]:
    """Verdicts of the case's migration_completed steps, leg by leg, run ones only."""
    return [
        s["verdict"]
        for s in case["steps"]
        if s["name"].startswith("migration_completed") and s["verdict"] != "skip"
    ]


def one_run(args: argparse.Namespace, trips: int, out: Path) -> dict[str, Any]:
    """One `vhostlm run`; its case, run id and exit code."""
    argv = [sys.executable, "-m", "vhostlm", "run", "--case", args.case,
            "--round-trips", str(trips), "--pps", str(args.pps), "--output", str(out)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          cwd=ROOT, check=False)  # fmt: skip
    data = json.loads((out / "results.json").read_text())
    case = data["cases"][0] if data["cases"] else {"verdict": "error", "steps": [], "reason": ""}
    return {"case": case, "run_id": data["run_id"], "exit": proc.returncode}


def main() -> int:
    """Migrate until --migrations are done; print the figures; 0 when all is clean."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--migrations", type=int, default=50)
    parser.add_argument("--round-trips", type=int, default=5, help="per run (2 migrations each)")
    parser.add_argument("--case", default="virtio_net")
    parser.add_argument("--pps", type=float, default=PROBE_PPS)
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    args = parser.parse_args()

    started = time.monotonic()
    pages = hugepages_baseline()
    done = failed = runs = 0
    outages: list[float] = []
    downtimes: list[float] = []
    left: list[str] = []
    reasons: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vhostlm-soak-") as tmp:
        base = args.keep or Path(tmp)
        while done < args.migrations:
            trips = min(args.round_trips, math.ceil((args.migrations - done) / 2))
            runs += 1
            got = one_run(args, trips, base / f"run-{runs}")
            case = got["case"]
            verdicts = migration_steps(case)
            done += len(verdicts) or 1  # a run that failed before migrating counts as one
            failed += sum(v != "pass" for v in verdicts) or (0 if verdicts else 1)
            for leg in case.get("measure", {}).get("legs", []):
                if leg.get("status") == "completed" and "outage_ms" in leg:
                    outages.append(float(leg["outage_ms"]))
                    downtimes.append(float(leg["qemu"]["downtime_ms"]))
            if case["verdict"] != "pass":
                reasons.append(f"run {runs} ({got['run_id']}): {case['reason']}")
            left += [f"run {runs}: {item}" for item in leftovers(got["run_id"])]
            print(f"run {runs}: {case['verdict']}, {len(verdicts)} migrations "
                  f"({done}/{args.migrations}), exit {got['exit']}", flush=True)  # fmt: skip
    if hugepages_baseline() != pages:
        left.append(f"hugepages: pool {hugepages_baseline()} (was {pages}) less other runs")

    print(f"\nsoak: {done} migrations in {runs} runs of `vhostlm run --case {args.case} "
          f"--round-trips {args.round_trips} --pps {args.pps:g}`, "
          f"{time.monotonic() - started:.0f} s")  # fmt: skip
    print(f"failed migrations: {failed}")
    for reason in reasons:
        print(f"  {reason}")
    if outages:
        print(f"outage ms over {len(outages)} legs: p50 {percentile(outages, 50):.1f}, "
              f"p95 {percentile(outages, 95):.1f}, max {max(outages):.1f}")  # fmt: skip
        print(f"QEMU downtime ms: p50 {percentile(downtimes, 50):.0f}, "
              f"p95 {percentile(downtimes, 95):.0f}, max {max(downtimes):.0f}")  # fmt: skip
    print(f"leftovers: {len(left)}")
    for item in left:
        print(f"  {item}")
    return 0 if failed == 0 and not left else 1


if __name__ == "__main__":
    sys.exit(main())
