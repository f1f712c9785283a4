"""OVS-DPDK as the vhost-user backend (`--backend ovs-dpdk`) end to end on the embedded lab.

Real programs: Debian's ovs-vswitchd-dpdk and ovsdb-server, one private pair per node and
case, a learning userspace bridge between the lab's port and the guest's vhost-user port.
Two runs: the seed plan (server mode: OVS listens, `dpdkvhostuser`) and virtio_net in client
mode (QEMU listens, `dpdkvhostuserclient`). After each nothing of the run is left: no OVS
process, database or socket, and the system's own OVS directory is untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.conftest import leftovers, load, processes_mentioning, vhostlm
from tests.e2e.test_seed_plan import SEED_STEPS
from vhostlm.addresses import OVS_VSWITCHD_BINARY
from vhostlm.report.results import validate_results
from vhostlm.testbed.hugepages import baseline as hugepages_baseline

SYSTEM_OVS = Path("/var/run/openvswitch")  # the system service's: never used by vhostlm


def system_ovs_files() -> list[str]:
    """What the system's OVS run directory holds (nothing of ours may appear there)."""
    return sorted(p.name for p in SYSTEM_OVS.iterdir()) if SYSTEM_OVS.is_dir() else []


def ovs_run(tmp_path: Path, *args: str) -> tuple[dict[str, Any], Path]:
    """`vhostlm run --backend ovs-dpdk ARGS`: it passes, and leaves nothing; its results."""
    before = system_ovs_files()
    out = tmp_path / "run"
    proc = vhostlm("run", "--backend", "ovs-dpdk", "--output", str(out), *args, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert "result: PASS" in proc.stdout
    data = load(out / "results.json")
    assert validate_results(data) == []
    run_id = data["run_id"]
    assert leftovers(run_id) == []
    # the run's OVS daemons ran on files under its runtime directory: none still runs
    assert [p for p in processes_mentioning(OVS_VSWITCHD_BINARY) if run_id in p] == []
    assert [p for p in processes_mentioning("ovsdb-server") if run_id in p] == []
    assert system_ovs_files() == before
    return data, out


def check_ovs_case(case: dict[str, Any], out: Path, port_type: str) -> None:
    """One case passed on OVS: every seed step, the migration, traffic around it, a measured
    outage, the guest whole; its logs are OVS's, its bridge had the guest's port as asked."""
    name = case["name"]
    steps = {s["name"]: s["verdict"] for s in case["steps"]}
    for step in SEED_STEPS:
        assert steps.get(step) == "pass", (name, step, case["steps"])
    assert case["verdict"] == "pass", case["reason"]
    assert case["options"]["backend"] == "ovs-dpdk"
    assert case["migration"]["status"] == "completed"
    traffic = case["traffic"]
    assert traffic["received_before"] > 0 and traffic["received_during"] > 0
    assert traffic["received_after"] >= 10
    m = case["measure"]
    assert m["replies"] > 0 and m["outage_ms"] > 0 and m["lost_outside_window"] == 0, m
    assert case["integrity"]["failure"] == "" and case["integrity"]["pages_bad"] == 0
    for role in ("host", "backup"):
        vswitchd = (out / "logs" / f"{name}-ovs-dpdk-{role}.log").read_text()
        assert "DPDK Enabled - initialized" in vswitchd
        assert "virtio is now ready for processing" in vswitchd
        assert (out / "logs" / f"{name}-ovs-dpdk-{role}-ovsdb.log").exists()
        config = (out / "logs" / f"{name}-ovs-dpdk-{role}-ovs-config.log").read_text()
        assert f"type: {port_type}\n" in config and "type: dpdk\n" in config
        assert not (out / "logs" / f"{name}-testpmd-{role}.log").exists()


def test_seed_plan_passes_on_ovs_dpdk(tmp_path: Path, hugepages_before: int) -> None:
    """Both seed cases on OVS-DPDK in server mode (OVS's dpdkvhostuser port listens)."""
    data, out = ovs_run(tmp_path)
    assert {c["name"] for c in data["cases"]} == {"virtio_pmd", "virtio_net"}
    for case in data["cases"]:
        assert case["options"]["vhost_mode"] == "server"
        check_ovs_case(case, out, "dpdkvhostuser")
    commands = (out / "commands.sh").read_text()
    assert OVS_VSWITCHD_BINARY in commands and "ovsdb-server" in commands
    assert hugepages_baseline() == hugepages_before


def test_virtio_net_passes_on_ovs_dpdk_in_client_mode(
    tmp_path: Path, hugepages_before: int
) -> None:
    """QEMU listens (server=on), OVS's dpdkvhostuserclient port connects to it."""
    data, out = ovs_run(tmp_path, "--vhost-mode", "client", "--case", "virtio_net")
    (case,) = data["cases"]
    assert case["options"]["vhost_mode"] == "client"
    check_ovs_case(case, out, "dpdkvhostuserclient")
    assert hugepages_baseline() == hugepages_before


def test_a_case_ovs_cannot_run_is_a_skip_not_a_pass(tmp_path: Path) -> None:
    """dirty_rx_virtio_net floods the guest with testpmd's txonly: on OVS it is a skip with
    the reason, and nothing of it starts (no OVS, no QEMU)."""
    out = tmp_path / "run"
    proc = vhostlm("run", "--backend", "ovs-dpdk", "--case", "dirty_rx_virtio_net",
                   "--output", str(out), timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    data = load(out / "results.json")
    (case,) = data["cases"]
    assert case["verdict"] == "skip", case
    assert case["reason"] == (
        "not on --backend ovs-dpdk: OVS-DPDK cannot send into the guest at full speed "
        "(a testpmd txonly flood)"
    )
    assert all(s["verdict"] == "skip" for s in case["steps"])
    commands = (out / "commands.sh").read_text() if (out / "commands.sh").exists() else ""
    assert OVS_VSWITCHD_BINARY not in commands and "ovsdb-server" not in commands
    assert leftovers(data["run_id"]) == []


def test_postcopy_passes_on_ovs_dpdk_in_client_mode(tmp_path: Path, hugepages_before: int) -> None:
    """vhost-postcopy-support on a dpdkvhostuserclient port (OVS offers it on no other):
    the migration goes through postcopy and completes, the guest whole."""
    data, out = ovs_run(tmp_path, "--vhost-mode", "client", "--case", "postcopy_virtio_net")
    (case,) = data["cases"]
    steps = {s["name"]: s for s in case["steps"]}
    assert steps["postcopy_active"]["verdict"] == "pass", steps["postcopy_active"]
    assert case["migration"]["status"] == "completed"
    assert case["integrity"]["failure"] == "" and case["integrity"]["pages_bad"] == 0
    log = (out / "logs" / "postcopy_virtio_net-ovs-dpdk-backup.log").read_text()
    assert "POSTCOPY support for vhost-user-client enabled" in log
    assert hugepages_baseline() == hugepages_before
