"""Faults named in a step's reason: dead processes, a tester that stopped sending."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from vhostlm.measure import tester as tester_module
from vhostlm.nodes.local import LocalNode
from vhostlm.nodes.process import Process
from vhostlm.plans.faults import NO_TRAFFIC, Vitals, exit_description
from vhostlm.rundir import RunDir


@pytest.fixture
def rundir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunDir:
    monkeypatch.setattr("vhostlm.rundir.RUNTIME_ROOT", tmp_path / "runtime")
    return RunDir(tmp_path / "out", "t1")


def started(rundir: RunDir, name: str, code: str) -> Process:
    return Process(name, [sys.executable, "-c", code], rundir).start()


def test_exit_description_names_the_signal() -> None:
    assert exit_description(-signal.SIGKILL) == "was killed by SIGKILL"
    assert exit_description(3) == "exited with status 3"
    assert exit_description(None) == "is running"


def test_a_killed_process_is_named_and_retired_ones_are_not(rundir: RunDir) -> None:
    vitals = Vitals()
    victim = started(rundir, "victim", "import time; time.sleep(60)")
    done = started(rundir, "done", "pass")
    vitals.watch("the backup testpmd", victim, "backup")
    vitals.watch("the host QEMU", done, "host")
    vitals.retire(done)
    try:
        assert vitals.casualties() == []
        victim.stop(sig=signal.SIGKILL)
        assert vitals.casualties("backup") == [
            f"the backup testpmd (pid {victim.pid}) was killed by SIGKILL"
        ]
        assert vitals.casualties("host") == []
        detail, fault = vitals.explain("the guest received 0 packets")
        assert fault
        assert detail == (
            f"the guest received 0 packets; the backup testpmd (pid {victim.pid}) "
            "was killed by SIGKILL"
        )
        with pytest.raises(Exception, match="backup testpmd .* before the switch-over"):
            vitals.check("backup", "before the switch-over")
    finally:
        victim.stop()
        done.stop()


def test_nothing_to_explain_leaves_the_detail_alone(rundir: RunDir) -> None:
    vitals = Vitals()
    alive = started(rundir, "alive", "import time; time.sleep(60)")
    vitals.watch("the host QEMU", alive, "host")
    try:
        assert vitals.explain("migration failed: x") == ("migration failed: x", False)
    finally:
        alive.stop()


def make_tester(rundir: RunDir, code: str) -> tester_module.Tester:
    tester = tester_module.Tester(
        "tester", rundir, LocalNode("tester"), "eth0", "52:54:00:00:00:01", 10, None,
        sys.executable, str(rundir.sockets),
    )  # fmt: skip
    tester.process = Process("tester", [sys.executable, "-u", "-c", code], rundir)
    tester.process.start()
    tester.process.expect(r"sent \d+\n", 10)
    return tester


SENDING = "import time\nn=0\nwhile True:\n n+=1; print(f'sent {n}', flush=True); time.sleep(0.1)"


def test_a_sending_tester_is_traffic(rundir: RunDir) -> None:
    vitals = Vitals()
    vitals.watch_tester(make_tester(rundir, SENDING))
    try:
        assert vitals.no_traffic() is None
        vitals.check_traffic()
    finally:
        assert vitals.tester is not None
        vitals.tester.process.stop()


def test_a_killed_tester_is_no_traffic(rundir: RunDir) -> None:
    vitals = Vitals()
    tester = make_tester(rundir, SENDING)
    vitals.watch_tester(tester)
    try:
        os.kill(tester.process.pid, signal.SIGKILL)
        tester.process.wait(5)
        why = vitals.no_traffic()
        assert why is not None and why.startswith(f"{NO_TRAFFIC}: the tester (pid ")
        assert "was killed by SIGKILL after sending" in why
    finally:
        tester.process.stop()


def test_a_stopped_tester_is_no_traffic(rundir: RunDir) -> None:
    vitals = Vitals()
    tester = make_tester(rundir, SENDING)
    vitals.watch_tester(tester)
    try:
        os.kill(tester.process.pid, signal.SIGSTOP)  # alive, but sends nothing
        sent = tester.progress()[0]
        why = vitals.no_traffic(stall_s=0.5)
        assert why is not None
        assert why.endswith(f"stopped sending: its sent counter stayed at {sent} for 0.5 s")
        detail, fault = vitals.explain("the guest received nothing")
        assert fault and detail.startswith(NO_TRAFFIC) and "(the guest received nothing)" in detail
    finally:
        os.kill(tester.process.pid, signal.SIGCONT)  # else SIGTERM waits for its SIGKILL
        tester.process.stop()


def test_a_tester_stopped_on_purpose_is_no_fault(rundir: RunDir) -> None:
    """Once the case ends its traffic (retire_tester), a later failed check is not blamed
    on the tester it stopped itself."""
    vitals = Vitals()
    tester = make_tester(rundir, SENDING)
    vitals.watch_tester(tester)
    tester.process.stop()
    assert vitals.no_traffic() is not None
    vitals.retire_tester()
    assert vitals.no_traffic() is None
    assert vitals.explain("within_limits: outage 70 ms exceeds --max-outage-ms 0.001")[0] == (
        "within_limits: outage 70 ms exceeds --max-outage-ms 0.001"
    )
