#!/usr/bin/env python3
"""What the probes measure, per case, and the highest probe rate that stays clean.

For each seed case: outage_ms (traffic's view), QEMU's downtime_ms, their ratio, the
resolution, and the highest rate in --rates whose stream lost nothing outside the
switch-over window. Prints figures; asserts nothing. Run as root after `make image`:
`python bench/measure_bench.py [--rates 1000,2000,5000,10000]`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def run_case(case: str, pps: float, out: Path) -> dict[str, Any]:
    """One `vhostlm run --case CASE --pps PPS`; the case's results."""
    subprocess.run(
        [sys.executable, "-m", "vhostlm", "run", "--case", case, "--pps", str(pps),
         "--output", str(out)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    data: dict[str, Any] = json.loads((out / "results.json").read_text())["cases"][0]
    return data


def clean(case: dict[str, Any]) -> bool:
    """Passed, and no probe lost outside the switch-over window."""
    m = case.get("measure", {})
    return case["verdict"] == "pass" and m.get("lost_outside_window", 1) == 0


def main() -> int:
    """Run the cases at rising rates and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", default="virtio_pmd,virtio_net")
    parser.add_argument("--rates", default="1000,2000,5000,10000")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    header = ("case", "pps", "verdict", "outage_ms", "downtime_ms", "ratio", "resolution_ms",
              "stop->resume", "lost", "lost outside", "announce")  # fmt: skip
    print(" | ".join(f"{h:>12}" for h in header))
    with tempfile.TemporaryDirectory(prefix="vhostlm-mbench-") as tmp:
        for name in args.cases.split(","):
            cleanest = 0.0
            for pps in rates:
                case = run_case(name, pps, Path(tmp) / f"{name}-{pps:g}")
                m = case.get("measure", {})
                down = case["migration"]["downtime_ms"]
                outage = m.get("outage_ms", 0.0)
                ann = m.get("announce", {})
                announce = (
                    f"{ann.get('kind')} +{ann.get('after_resume_ms')}ms"
                    if ann.get("seen")
                    else "none"
                )
                cells = (name, f"{pps:g}", case["verdict"], f"{outage:.1f}", str(down),
                         f"{outage / down:.1f}" if down else "-", f"{m.get('resolution_ms', 0):g}",
                         f"{m.get('stop_to_resume_ms', 0):.1f}", str(m.get("lost")),
                         str(m.get("lost_outside_window")), announce)  # fmt: skip
                print(" | ".join(f"{c:>12}" for c in cells), flush=True)
                if not clean(case):
                    break
                cleanest = pps
            print(f"{name}: cleanest rate {cleanest:g} pps (no loss outside the switch-over)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
