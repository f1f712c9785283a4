"""The reconnect plan end to end on the embedded lab: a backend restarted mid-case reconnects.

Real programs: the backend (testpmd, or ovs-vswitchd of a private OVS-DPDK) is stopped and
started again while QEMU, the vhost-user server (`server=on`, the client-mode cases),
keeps listening, or, in server mode, while QEMU, the client, retries every `reconnect-ms`
until the new backend's socket answers; the guest must answer again and the recovery is
measured with the probes, the same way in both modes. Across the tests both client-mode
cases and both backends run: the destination's testpmd restarted right after the
switch-over, and the source's ovs-vswitchd restarted before the migration (its ovsdb-server
and database kept); and in server mode the destination's testpmd (the other server-mode
combinations run by hand: CI time). After each nothing of the run is left.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.conftest import leftovers, load, processes_mentioning, vhostlm
from tests.e2e.test_ovs import ovs_run
from vhostlm.report.results import validate_results
from vhostlm.testbed.hugepages import baseline as hugepages_baseline

READY = "virtio is now ready for processing"


def check_reconnect(
    case: dict[str, Any], out: Path, step: str, role: str, log: str, mode: str = "client"
) -> None:
    """The case passed in its vhost-user `mode` with its restart step, and the restart was
    measured: a new process (its own log, with the ready line), a recovery > 0 from the
    last reply before the restart to the first after it, its segments adding up to it."""
    assert case["verdict"] == "pass", case["reason"]
    steps = {s["name"]: s for s in case["steps"]}
    for name in (step, "migration_completed", "receives_after_migration", "reconnect_recovered",
                 "guest_intact", "outage_sound"):  # fmt: skip
        assert steps[name]["verdict"] == "pass", (name, steps[name])
    assert case["options"]["vhost_mode"] == mode  # pinned by the case, not passed
    assert case["migration"]["status"] == "completed"
    m = case["measure"]
    r = m["reconnect"]
    assert r["role"] == role and r["new_pid"] != r["old_pid"]
    assert r["recovery_ms"] is not None and r["recovery_ms"] > 0, r
    assert steps["reconnect_recovered"]["figures"]["recovery_ms"] == r["recovery_ms"]
    ev = r["events"]
    assert ev["restart"] < ev["down"] < ev["up"] and ev["restart"] < ev["ready"]
    assert r["last_reply"] < r["first_reply"] and r["first_reply"] >= ev["down"]
    assert abs(sum(r["segments"].values()) - r["recovery_ms"]) < 0.01, r["segments"]
    assert READY in r["ready_line"] and r["lost"] > 0
    # the restart's lost probes are its own, not unexplained loss; the migration's outage
    # is measured apart from it
    assert m["lost_outside_window"] == 0 and m["outage_ms"] > 0
    assert m["outage_end"] <= r["last_reply"] or m["outage_start"] >= r["first_reply"]
    assert case["integrity"]["failure"] == ""
    # QEMU's lines about its backend going away are reported as expected, never fatal
    for a in case["integrity"]["anomalies"]:
        assert a["severity"] != "fatal", a
    assert READY in (out / "logs" / f"{log}-restart1.log").read_text()


def test_the_destination_testpmd_restarted_after_the_switch_over_reconnects(
    tmp_path: Path, hugepages_before: int
) -> None:
    out = tmp_path / "run"
    proc = vhostlm("run", "--case", "reconnect_dest_virtio_net", "--output", str(out))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert "result: PASS" in proc.stdout
    data = load(out / "results.json")
    assert validate_results(data) == []
    (case,) = data["cases"]
    assert case["options"]["backend"] == "testpmd"
    name = "reconnect_dest_virtio_net"
    check_reconnect(case, out, "restart_destination_backend", "backup", f"{name}-testpmd-backup")
    restarted = next(s for s in case["steps"] if s["name"] == "restart_destination_backend")
    assert restarted["detail"].startswith("the backup testpmd restarted (pid ")
    # right after the switch-over: once the outage window (RESUME + 1 s) closed
    assert case["measure"]["reconnect"]["events"]["restart"] > case["measure"]["window"][1]
    commands = (out / "commands.sh").read_text()
    assert "client=1" in commands and "server=on,wait=off" in commands
    assert leftovers(data["run_id"]) == []
    assert [p for p in processes_mentioning("dpdk-testpmd") if data["run_id"] in p] == []
    assert hugepages_baseline() == hugepages_before


def test_qemu_reconnects_to_the_destination_server_mode_testpmd_restarted(
    tmp_path: Path, hugepages_before: int
) -> None:
    """Server mode: testpmd listens, QEMU connects with `reconnect-ms`; after the restart
    the backup's QEMU connects to the new testpmd's socket by itself."""
    out = tmp_path / "run"
    name = "reconnect_dest_server_virtio_net"
    proc = vhostlm("run", "--case", name, "--output", str(out))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    data = load(out / "results.json")
    assert validate_results(data) == []
    (case,) = data["cases"]
    check_reconnect(case, out, "restart_destination_backend", "backup",
                    f"{name}-testpmd-backup", mode="server")  # fmt: skip
    assert case["options"]["qemu_reconnect_ms"] == 100
    commands = (out / "commands.sh").read_text()
    # the backends listen (no client=1); each QEMU's vhost-user chardev retries
    assert "client=1" not in commands
    assert f"{name}-backup-vhost.sock,reconnect-ms=100" in commands
    assert f"{name}-host-vhost.sock,reconnect-ms=100" in commands
    assert case["measure"]["reconnect"]["events"]["restart"] > case["measure"]["window"][1]
    assert leftovers(data["run_id"]) == []
    assert [p for p in processes_mentioning("dpdk-testpmd") if data["run_id"] in p] == []
    assert hugepages_baseline() == hugepages_before


def test_the_source_ovs_vswitchd_restarted_before_the_migration_reconnects(
    tmp_path: Path, hugepages_before: int
) -> None:
    data, out = ovs_run(tmp_path, "--case", "reconnect_source_virtio_net")
    (case,) = data["cases"]
    name = "reconnect_source_virtio_net"
    check_reconnect(case, out, "restart_source_backend", "host", f"{name}-ovs-dpdk-host")
    r = case["measure"]["reconnect"]
    assert r["program"] == "ovs-vswitchd"
    # before the migration: the restart's gap is over before `migrate`
    assert r["first_reply"] < case["measure"]["events"]["migrate"]
    # the restarted ovs-vswitchd ran on the kept database: the first one's ovsdb-server
    # alone has a log, and the bridge's client port was rebuilt from it
    logs = out / "logs"
    assert (logs / f"{name}-ovs-dpdk-host-ovsdb.log").exists()
    assert not (logs / f"{name}-ovs-dpdk-host-restart1-ovsdb.log").exists()
    assert "dpdkvhostuserclient" in (logs / f"{name}-ovs-dpdk-host-ovs-config.log").read_text()
    assert hugepages_baseline() == hugepages_before
