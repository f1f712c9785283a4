#!/usr/bin/env python3
"""Wall time of the seed plan, phase by phase, and of a bare guest boot under TCG.

Prints figures against the targets (seed plan < 20 s, each case's overhead, its wall time
over boot to shell plus QEMU's migration total-time, <= 1.2x; bare boot <= 6 s), the
medians of --runs runs side by side; it asserts nothing. Run as root after `make image`:
`python bench/seed_bench.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import boot_s, run_vhostlm

from vhostlm.addresses import QEMU_BINARY
from vhostlm.apps.console import SHELL_PROMPT
from vhostlm.apps.qemu import VmSpec
from vhostlm.image.build import build_image
from vhostlm.nodes.process import Process
from vhostlm.plans.env import TCG_CPU
from vhostlm.rundir import RunDir
from vhostlm.runner import CACHE_DIR

PLAN_TARGET_S = 20.0  # issue 16's goal for the seed plan on this machine
BOOT_TARGET_S = 6.0
RATIO_TARGET = 1.2  # case wall time / (boot to shell + QEMU's migration total-time)


def bare_boot(rundir: RunDir, n: int) -> list[float]:
    """Seconds from QEMU start to the guest shell prompt, TCG, no devices."""
    img = build_image(CACHE_DIR / "images")
    times = []
    for i in range(n):
        argv = [
            QEMU_BINARY, "-machine", "pc,accel=tcg", "-cpu", TCG_CPU, "-m", "1024M", "-smp", "2",
            "-kernel", str(img.kernel), "-initrd", str(img.initrd),
            "-append", VmSpec.append, "-nodefaults",
            "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
        ]  # fmt: skip
        proc = Process(f"boot-{i}", argv, rundir)
        start = time.monotonic()
        proc.start()
        try:
            proc.expect(re.escape(SHELL_PROMPT), 120)
            times.append(time.monotonic() - start)
        finally:
            proc.stop(timeout=2)
    return times


def run_plan(out: Path) -> tuple[float, dict[str, Any]]:
    """One `vhostlm run` of the seed plan; its wall time and results."""
    run = run_vhostlm([], out)
    if run.returncode != 0:
        print(run.stdout[-3000:], run.stderr[-2000:], sep="\n")
    if run.results is None:
        raise SystemExit(f"the seed plan wrote no results.json in {out}")
    return run.wall_s, run.results


def step_s(case: dict[str, Any], *names: str) -> float:
    """Summed duration of the named steps."""
    return sum(s["duration_s"] for s in case["steps"] if s["name"] in names)


def show_run(wall: float, data: dict[str, Any]) -> None:
    """Print one run's phases."""
    ph = data.get("phases", {})
    print(
        f"\nplan wall {wall:.1f} s (target < {PLAN_TARGET_S:.0f} s: "
        f"{'met' if wall < PLAN_TARGET_S else 'MISSED'}), accel {data['accel']}"
    )
    print(
        f"  image {ph.get('image_s', 0):.1f} s  lab {ph.get('lab_s', 0):.2f} s  "
        f"accel probe {ph.get('accel_probe_s', 0):.1f} s  teardown {ph.get('teardown_s', 0):.2f} s"
    )
    header = (
        "case",
        "verdict",
        "testpmds",
        "boot src",
        "boot dst",
        "driver",
        "traffic",
        "migration",
        "qemu total",
        "RAM MiB",
        "downtime",
        "stop",
        "case",
    )
    print("  " + " | ".join(f"{h:>10}" for h in header))
    for case in data["cases"]:
        mig = case["migration"]
        cells = [
            case["name"], case["verdict"],
            f"{step_s(case, 'host_testpmd', 'backup_testpmd'):.1f}",
            f"{step_s(case, 'host_vm', 'guest_boots'):.1f}",
            f"{step_s(case, 'backup_vm'):.1f}",
            f"{step_s(case, 'guest_testpmd', 'guest_link_up', 'vhost_connected'):.1f}",
            f"{step_s(case, 'guest_receives', 'receives_after_migration'):.1f}",
            f"{case['phases'].get('migration_s', 0):.1f}",
            f"{mig['total_time_ms'] / 1000:.1f}",
            f"{mig.get('ram_transferred_bytes', 0) / 2**20:.1f}",
            f"{mig['downtime_ms']} ms",
            f"{case['phases'].get('stop_s', 0):.1f}",
            f"{case['duration_s']:.1f}",
        ]  # fmt: skip
        print("  " + " | ".join(f"{c:>10}" for c in cells))


def overhead(case: dict[str, Any]) -> float:
    """Case wall time over QEMU's own work (boot to shell + the migration's total-time):
    1.0 would be a harness that costs nothing."""
    qemu_s = boot_s(case) + case["migration"]["total_time_ms"] / 1000
    return case["duration_s"] / qemu_s if qemu_s else float("inf")


def show_ratios(runs: list[tuple[float, dict[str, Any]]]) -> None:
    """Per case, the medians over the runs: wall time, QEMU's work, and their ratio."""
    names = [c["name"] for c in runs[0][1]["cases"]]
    print(f"\noverhead, median of {len(runs)} run(s) (target <= {RATIO_TARGET}x):")
    for name in names:
        cases = [c for _, d in runs for c in d["cases"] if c["name"] == name]
        wall = statistics.median(c["duration_s"] for c in cases)
        boot = statistics.median(boot_s(c) for c in cases)
        mig = statistics.median(c["migration"]["total_time_ms"] / 1000 for c in cases)
        ratio = statistics.median(overhead(c) for c in cases)
        verdict = "met" if ratio <= RATIO_TARGET else "MISSED"
        print(f"  {name:>12}: case {wall:.1f} s, boot {boot:.1f} s + migration {mig:.1f} s "
              f"-> {ratio:.2f}x ({verdict})")  # fmt: skip
    wall = statistics.median(w for w, _ in runs)
    print(f"  seed plan wall: median {wall:.1f} s (target < {PLAN_TARGET_S:.0f} s: "
          f"{'met' if wall < PLAN_TARGET_S else 'MISSED'})")  # fmt: skip


def main() -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="seed-plan runs")
    parser.add_argument("--boots", type=int, default=3, help="bare boots")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vhostlm-bench-") as tmp:
        rundir = RunDir(Path(tmp) / "boot", "bench" + str(int(time.time()) % 10000))
        boots = bare_boot(rundir, args.boots)
        med = statistics.median(boots)
        print(
            f"bare boot to shell (TCG, {TCG_CPU}): "
            + ", ".join(f"{b:.2f}" for b in boots)
            + f" s; median {med:.2f} s (target <= {BOOT_TARGET_S:.0f} s: "
            + ("met" if med <= BOOT_TARGET_S else "MISSED")
            + ")"
        )
        runs = []
        for i in range(args.runs):
            wall, data = run_plan(Path(tmp) / f"run{i}")
            show_run(wall, data)
            runs.append((wall, data))
        show_ratios(runs)
        shutil.rmtree(rundir.runtime, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
