"""Interrupted runs and refused runs leave nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, hugepages_baseline, leftovers, load, vhostlm

RUNTIME = Path("/run/vhostlm")


def runtime_dirs() -> set[str]:
    return {p.name for p in RUNTIME.iterdir()} if RUNTIME.exists() else set()


@pytest.mark.parametrize(
    ("sig", "phase", "args"),
    [
        (signal.SIGINT, "guest_boots", []),  # during boot
        (signal.SIGTERM, "guest_receives", []),
        (signal.SIGINT, "guest_receives", []),  # during traffic
        # during the migration (slowed to ~20 s so it is surely still active)
        (signal.SIGINT, "receives_during_migration", ["--max-bandwidth", "40"]),
    ],
    ids=["sigint-boot", "sigterm-traffic", "sigint-traffic", "sigint-migration"],
)
def test_signal_mid_run_exits_130_and_cleans_up(
    tmp_path: Path, hugepages_before: int, sig: signal.Signals, phase: str, args: list[str]
) -> None:
    """Ctrl-C (or SIGTERM) while QEMU and testpmd run: exit 130, no process, netns, socket."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vhostlm",
            "run",
            "--case",
            "virtio_net",
            "--output",
            str(out),
            *args,
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if f"virtio_net: {phase}" in line:
            break
    else:
        proc.wait(10)
        pytest.fail(f"run ended before {phase}: {''.join(seen)}")
    proc.send_signal(sig)
    rc = proc.wait(120)
    assert rc == 130, "".join(seen) + proc.stderr.read()
    data = load(out / "results.json")
    assert leftovers(data["run_id"]) == []
    assert hugepages_baseline() == hugepages_before


def test_missing_binary_is_refused_before_anything_starts(tmp_path: Path) -> None:
    before = runtime_dirs()
    env = dict(os.environ, PATH=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "vhostlm", "run", "--output", str(tmp_path / "run")],
        cwd=ROOT, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "vhostlm: error: qemu-system-x86_64 not found: apt-get install qemu-system-x86 "
        "(or run `make run`)"
    ]
    assert runtime_dirs() == before
    assert not (tmp_path / "run").exists()


def test_too_few_hugepages_is_refused_before_anything_starts(
    tmp_path: Path, hugepages_before: int
) -> None:
    before = runtime_dirs()
    proc = vhostlm("run", "--guest-mem", "10000000", "--output", str(tmp_path / "run"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "too few hugepages" in lines[0] and "--guest-mem" in lines[0]
    assert runtime_dirs() == before
    assert hugepages_baseline() == hugepages_before
    assert not (tmp_path / "run").exists()
