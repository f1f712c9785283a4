"""Faults injected from outside, as an admin would: a pid killed at the wrong moment.

Each test starts `vhostlm run` in the background, follows its progress lines, finds the
victim's pid in the run's record (/run/vhostlm/<id>/resources.json) by its command line
and signals it. It then checks the verdict, the reason, the steps that prove what still
works, and that nothing of the run is left. `--max-bandwidth` slows the migration so the
fault lands while it is active.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import FULL_ONLY
from tests.e2e.live import LiveRun, steps
from vhostlm.addresses import OVS_VSWITCHD_BINARY

CASE = "virtio_net"
DURING = f"{CASE}: receives_during_migration"  # migrate issued, MIGRATION event 'active'
SLOW = ("--max-bandwidth", "40")  # ~110 MiB of guest RAM at 5 MB/s: about 20 s
STALL_S = 0.1  # each freeze of the tester (SIGSTOP, SIGCONT 100 ms later)
RUN_S = 0.003  # the tester runs this long between freezes: its catch-up burst and a probe
AFTER = f"{CASE}: receives_after_migration"  # printed once the destination has RESUMEd


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


def in_namespace(pid: int) -> str:
    """The network namespace a process runs in (`ip netns identify`)."""
    found = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True,
                           text=True, check=False)  # fmt: skip
    return found.stdout.strip()


def test_backup_ovs_vswitchd_killed_before_the_switch_over(
    tmp_path: Path, live: list[LiveRun]
) -> None:
    """On OVS-DPDK the destination's backend is ovs-vswitchd: killed, the case fails naming
    it, as for testpmd."""
    run = start(live, tmp_path / "run", "--backend", "ovs-dpdk", *SLOW)
    run.wait_for(DURING)
    vswitchds = [p for p, cmd in run.processes().items() if OVS_VSWITCHD_BINARY in cmd]
    backup = [p for p in vswitchds if in_namespace(p).endswith("-backup")]
    assert len(vswitchds) == 2 and len(backup) == 1, (vswitchds, backup)
    os.kill(backup[0], signal.SIGKILL)
    assert run.finish() == 1, run.output()
    case = run.case()
    assert case["verdict"] == "fail"
    assert f"the backup ovs-vswitchd (pid {backup[0]}) was killed by SIGKILL" in case["reason"]
    assert "before the switch-over" in case["reason"], case["reason"]
    assert steps(case)["receives_after_migration"]["verdict"] == "skip"


@pytest.mark.parametrize(
    "sig",
    [pytest.param(signal.SIGKILL, marks=FULL_ONLY), signal.SIGSTOP],
    ids=["killed", "stopped"],
)  # make test samples the frozen tester (the harder to tell); make test-full both
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


def stall_cycle(run: LiveRun, pid: int, until: str, then_s: float) -> int:
    """Freeze `pid` for STALL_S, let it run RUN_S, over and over, until a progress line
    holds `until` and `then_s` more seconds have passed (or the run ends); the stalls."""
    stalls, deadline = 0, None
    try:
        while run.proc.poll() is None and (deadline is None or time.monotonic() < deadline):
            os.kill(pid, signal.SIGSTOP)
            stalls += 1
            time.sleep(STALL_S)
            os.kill(pid, signal.SIGCONT)
            time.sleep(RUN_S)
            if deadline is None and any(until in line for line in run.stderr):
                deadline = time.monotonic() + then_s
    except ProcessLookupError:
        pass  # the tester was stopped by the run: nothing left to freeze
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    return stalls


def test_a_tester_stall_across_the_switch_over_is_the_stall_error(
    tmp_path: Path, live: list[LiveRun]
) -> None:
    """The tester's probe.py frozen for 100 ms at a time (SIGSTOP, SIGCONT 100 ms later,
    3 ms to run) from the precopy until the switch-over window has closed: `error` naming
    the tester's stall, never a pass or a fail on a 100 ms "outage" that is the tester's.

    Why a stall touches the outage: the window [STOP - margin, RESUME + 1 s] holds several
    freezes, each a reply gap of 100 ms with both edges stalled, so the outage picked (the
    largest gap in it) is at least that long. A gap as long with no stalled edge needs the
    guest itself cut off for as long, from a moment the tester was sending: the path broke
    inside one of the 3 ms runs (3 % of the time) and stayed down past the next freeze.
    The guest's own outage is 40 ms in a quiet run (virtio_net at 1000 probes/s), up to
    130 ms on a loaded machine; a pause that lands wholly inside it does not move its
    edges and is, rightly, only named."""
    run = start(live, tmp_path / "run")
    run.wait_for(f"{CASE}: migration_completed")  # receives_during_migration has passed
    pid = run.pid_of("probe.py")
    stalls = stall_cycle(run, pid, AFTER, 1.5)
    assert run.finish() == 1, run.output()
    case = run.case()
    assert stalls >= 10, stalls
    assert case["verdict"] == "error", (case["verdict"], case["reason"])
    reason = case["reason"]
    assert reason.startswith("outage_sound: the tester stopped sending for "), reason
    found = re.search(r"the tester stopped sending for (\d+) ms at the (start|end) of", reason)
    assert found and 90 <= int(found.group(1)) < 1000, reason
    assert "outage is the tester's, not only the guest's" in reason
    assert "the tester fell behind its rate: " in reason, reason
    m = case["measure"]
    assert max(m["send_gap_edges_ms"]) >= 90, m["send_gap_edges_ms"]
    assert m["outage_ms"] >= 90 and m["window_pps"] < 500, (m["outage_ms"], m["window_pps"])
    assert m["achieved_pps"] < 950 and m["lost_outside_window"] == 0, m["achieved_pps"]
    s = steps(case)
    assert s["outage_sound"]["verdict"] == "error"
    assert s["receives_after_migration"]["verdict"] == "pass"
    # the tester said it fell behind, in its own words
    log = (tmp_path / "run" / "logs" / f"{CASE}-tester.log").read_text()
    assert re.search(r"rate asked 1000 achieved [\d.]+ probes/s: fell behind \d+ times", log)
