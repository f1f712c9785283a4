"""The lab on its own, and clean-up after a run that was killed with SIGKILL."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, hugepages_baseline, leftovers, processes_mentioning, vhostlm


def netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines()]


def test_lab_up_status_down(hugepages_before: int) -> None:
    up = vhostlm("lab", "up")
    assert up.returncode == 0, up.stderr
    run_id = re.search(r"lab (\w+) is up", up.stdout)
    assert run_id, up.stdout
    rid = run_id.group(1)
    try:
        names = [n for n in netns() if n.startswith(f"vhostlm-{rid}-")]
        assert sorted(names) == [
            f"vhostlm-{rid}-{r}" for r in ("backup", "host", "switch", "tester")
        ]
        host = f"vhostlm-{rid}-host"
        ping = subprocess.run(
            ["ip", "netns", "exec", host, "ping", "-c", "1", "-W", "2", "198.18.0.2"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert ping.returncode == 0, ping.stdout + ping.stderr
        status = vhostlm("lab", "status")
        assert rid in status.stdout
    finally:
        down = vhostlm("lab", "down", rid)
    assert down.returncode == 0, down.stderr
    assert leftovers(rid) == []
    assert hugepages_baseline() == hugepages_before
    bad = vhostlm("lab", "down", "nosuchlab")
    assert bad.returncode == 2 and "no lab 'nosuchlab'" in bad.stderr


def test_lab_down_cleans_up_after_kill_9(tmp_path: Path, hugepages_before: int) -> None:
    """kill -9 of vhostlm mid-run leaves QEMU and testpmd; `lab down` removes all of it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vhostlm", "run", "--case", "virtio_net", "--output", str(tmp_path)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    rid = ""
    for line in proc.stderr:
        found = re.search(r"run (\w+): output in", line)
        rid = found.group(1) if found else rid
        if "virtio_net: backup_vm" in line:
            break
    else:
        pytest.fail("the run ended before the backup VM started")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert rid
    assert processes_mentioning(f"/run/vhostlm/{rid}/"), "expected orphans after kill -9"
    down = vhostlm("lab", "down")
    assert down.returncode == 0, down.stderr
    assert rid in down.stdout
    assert leftovers(rid) == []
    assert hugepages_baseline() == hugepages_before
