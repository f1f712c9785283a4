"""Faults injected from outside, as an admin would: a pid killed at the wrong moment.

Each test starts `vhostlm run` in the background, follows its progress lines, finds the
victim's pid in the run's record (/run/vhostlm/<id>/resources.json) by its command line
and signals it. It then checks the verdict, the reason, the steps that prove what still
works, and that nothing of the run is left. `--max-bandwidth` slows the migration so the
fault lands while it is active.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.e2e.live import LiveRun, steps

CASE = "virtio_net"
DURING = f"{CASE}: receives_during_migration"  # migrate issued, MIGRATION event 'active'
SLOW = ("--max-bandwidth", "40")  # ~110 MiB of guest RAM at 5 MB/s: about 20 s


def start(runs: list[LiveRun], out: Path, *args: str) -> LiveRun:
    run = LiveRun(out, "--case", CASE, *args)
    runs.append(run)
    return run


def test_destination_qemu_killed_during_migration(tmp_path: Path, live: list[LiveRun]) -> None:
    """The migration fails, says why, and the guest goes on on the source."""
    run = start(live, tmp_path / "run", *SLOW)
    run.wait_for(DURING)
    pid = run.kill(signal.SIGKILL, "qemu-system-x86_64", "-incoming")
    assert run.finish() == 1, run.output()
    case = run.case()
    assert case["verdict"] == "fail"
    assert case["reason"].startswith("migration failed: "), case["reason"]
    assert f"the backup QEMU {CASE}-backup (pid {pid}) was killed by SIGKILL" in case["reason"]
    assert case["migration"]["status"] == "failed"
    s = steps(case)
    assert s["migration_completed"]["verdict"] == "fail"
    # the source still runs and still answers probes after the failure
    assert s["source_keeps_receiving"]["verdict"] == "pass", s["source_keeps_receiving"]
    assert s["receives_after_migration"]["verdict"] == "skip"
    assert case["measure"]["replies"] > 0


def test_backup_testpmd_killed_before_the_switch_over(tmp_path: Path, live: list[LiveRun]) -> None:
    """The destination has no vhost-user backend any more: fail, naming the backup testpmd."""
    run = start(live, tmp_path / "run", *SLOW)
    run.wait_for(DURING)
    pid = run.kill(signal.SIGKILL, "dpdk-testpmd", f"-{CASE}-backup ")
    assert run.finish() == 1, run.output()
    case = run.case()
    assert case["verdict"] == "fail"
    assert f"the backup testpmd (pid {pid}) was killed by SIGKILL" in case["reason"]
    assert "before the switch-over" in case["reason"], case["reason"]
    assert steps(case)["receives_after_migration"]["verdict"] == "skip"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "stopped"])
def test_tester_stops_sending(tmp_path: Path, live: list[LiveRun], sig: signal.Signals) -> None:
    """The tester dies or freezes mid-migration: 'no traffic', never a pass."""
    run = start(live, tmp_path / "run")
    run.wait_for(DURING)
    pid = run.kill(sig, "probe.py")
    assert run.finish() == 1, run.output()
    case = run.case()
    assert case["verdict"] == "fail"
    assert case["reason"].startswith(f"no traffic: the tester (pid {pid}) "), case["reason"]
    if sig == signal.SIGKILL:
        assert "was killed by SIGKILL after sending" in case["reason"]
    else:
        assert "stopped sending: its sent counter stayed at" in case["reason"]
    assert [s for s in case["steps"] if s["verdict"] == "fail"][-1]["detail"].startswith(
        "no traffic"
    )


def test_migration_timeout_cancels_and_keeps_the_source(
    tmp_path: Path, live: list[LiveRun]
) -> None:
    """--migration-timeout: fail with QEMU's figures so far; cancelled; the source runs."""
    run = start(live, tmp_path / "run", "--migration-timeout", "6", "--max-bandwidth", "8")
    assert run.finish() == 1, run.output()
    case = run.case()
    assert case["verdict"] == "fail"
    reason = case["reason"]
    assert reason.startswith("migration did not complete within --migration-timeout 6 s (total"), (
        reason
    )
    assert "cancelled, the guest stays on the host" in reason
    assert case["migration"]["status"] == "cancelled"
    assert case["migration"]["ram_transferred_bytes"] > 0
    s = steps(case)
    assert s["source_keeps_receiving"]["verdict"] == "pass", s["source_keeps_receiving"]
    assert case["measure"]["events"]["cancelled"] - case["measure"]["events"]["migrate"] < 10
