#!/usr/bin/env python3
"""What the probes measure, per case and rate, and the highest probe rate that stays clean.

For each case and rate in --rates: the verdict, outage_ms (traffic's view) and QEMU's
downtime_ms, the noise floor (p99/max of the reply gaps before the migration), the
largest send gap of the tester inside the outage, the tester's receive drops, the probes
lost outside the switch-over window, and the rate the tester achieved against the rate
asked (in the outage's window too). A rate is clean when the case passed, nothing was
lost outside the window, and the noise floor is unchanged from the lowest rate's (p99 at
most NOISE_GROWTH times it plus NOISE_SLACK_MS). Prints the table and the highest clean
rate per case; asserts nothing. Run as root after `make image`:
`python bench/measure_bench.py [--cases virtio_net] [--rates 1000,2000,5000,10000]`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import run_vhostlm

NOISE_GROWTH = 1.5  # a noise p99 up to 1.5x the lowest rate's ...
NOISE_SLACK_MS = 1.0  # ... plus 1 ms is "unchanged" (TCG's bursts vary run to run)

HEADER = ("case", "pps", "verdict", "outage_ms", "downtime_ms", "noise_p99", "noise_max",
          "send_gap_ms", "tester_drops", "lost", "lost_outside", "achieved", "in_window",
          "clean")  # fmt: skip


def run_case(case: str, pps: float, out: Path) -> dict[str, Any]:
    """One `vhostlm run --case CASE --pps PPS`; the case's results ({} if it wrote none)."""
    run = run_vhostlm(["--case", case, "--pps", f"{pps:g}"], out)
    if run.results is None:
        print(f"{case} at {pps:g} pps wrote no results: {run.stderr.strip()[-300:]}")
        return {}
    data: dict[str, Any] = run.results["cases"][0]
    return data


def noise_p99(case: dict[str, Any]) -> float:
    """The noise p99 (ms) of a case's probe stream."""
    return float((case.get("measure", {}).get("noise_ms") or {}).get("p99", 0.0))


def clean(case: dict[str, Any], base_p99: float | None) -> bool:
    """Passed, no probe lost outside the switch-over window, noise floor unchanged."""
    m = case.get("measure", {})
    if case.get("verdict") != "pass" or m.get("lost_outside_window", 1) != 0:
        return False
    return base_p99 is None or noise_p99(case) <= NOISE_GROWTH * base_p99 + NOISE_SLACK_MS


def row(name: str, pps: float, case: dict[str, Any], is_clean: bool) -> tuple[str, ...]:
    """The table's cells of one run."""
    m = case.get("measure", {})
    noise = m.get("noise_ms") or {}
    down = (case.get("migration") or {}).get("downtime_ms")
    return (
        name, f"{pps:g}", str(case.get("verdict", "-")), f"{float(m.get('outage_ms', 0)):.1f}",
        str(down), f"{float(noise.get('p99', 0)):.1f}", f"{float(noise.get('max', 0)):.1f}",
        f"{float(m.get('send_gap_ms', 0)):.1f}", str(m.get("tester_drops")), str(m.get("lost")),
        str(m.get("lost_outside_window")), f"{float(m.get('achieved_pps', 0)):.0f}",
        f"{float(m.get('window_pps', 0)):.0f}", "yes" if is_clean else "no",
    )  # fmt: skip


def main() -> int:
    """Run the cases at each rate and print the table and the highest clean rate."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", default="virtio_pmd,virtio_net")
    parser.add_argument("--rates", default="1000,2000,5000,10000")
    parser.add_argument("--keep", type=Path, help="keep each run's directory under here")
    args = parser.parse_args()
    rates = sorted(float(r) for r in args.rates.split(","))
    print(" | ".join(f"{h:>12}" for h in HEADER), flush=True)
    with tempfile.TemporaryDirectory(prefix="vhostlm-mbench-") as tmp:
        where = args.keep or Path(tmp)
        for name in args.cases.split(","):
            cleanest = 0.0  # the highest rate below which every rate was clean
            broken = False
            base: float | None = None
            for pps in rates:
                case = run_case(name, pps, where / f"{name}-{pps:g}")
                if not case:
                    continue
                is_clean = clean(case, base)
                if base is None:
                    base = noise_p99(case)
                print(" | ".join(f"{c:>12}" for c in row(name, pps, case, is_clean)), flush=True)
                broken = broken or not is_clean
                if not broken:
                    cleanest = pps
                reason = case.get("reason")
                if reason:
                    print(f"{'':>12}   {reason[:160]}", flush=True)
            print(f"{name}: highest clean rate {cleanest:g} pps", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
