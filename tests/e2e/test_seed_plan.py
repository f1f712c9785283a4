"""The seed plan end to end on the embedded lab, with the real stack."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import HUGE_NR, leftovers, load, vhostlm
from vhostlm.report.results import validate_results

SEED_STEPS = [
    "host_testpmd",
    "host_vm",
    "backup_testpmd",
    "backup_vm",
    "vhost_connected",
    "guest_receives",
    "migration_active",
    "receives_during_migration",
    "migration_completed",
    "receives_after_migration",
]


def test_seed_plan_passes_and_leaves_nothing(tmp_path: Path, hugepages_before: int) -> None:
    """Both seed cases pass; figures, logs and command lines are recorded; nothing is left."""
    out = tmp_path / "run"
    proc = vhostlm("run", "--output", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "result: PASS" in proc.stdout
    data = load(out / "results.json")
    assert validate_results(data) == []
    assert data["accel"] in ("kvm", "tcg")
    assert {c["name"] for c in data["cases"]} == {"virtio_pmd", "virtio_net"}
    for case in data["cases"]:
        steps = {s["name"]: s["verdict"] for s in case["steps"]}
        for name in SEED_STEPS:
            assert steps.get(name) == "pass", (case["name"], name, case["steps"])
        assert case["verdict"] == "pass"
        mig = case["migration"]
        assert mig["status"] == "completed"
        assert mig["total_time_ms"] > 0 and mig["ram_transferred_bytes"] > 0
        traffic = case["traffic"]
        assert traffic["received_before"] > 0
        assert traffic["received_during"] > 0
        assert traffic["received_after"] >= 10
        assert traffic["sent"] >= traffic["received_after"]
    for key in ("qemu", "dpdk", "guest_kernel"):
        assert data["versions"][key]
    commands = (out / "commands.sh").read_text()
    assert "qemu-system-x86_64" in commands and "-incoming tcp:" in commands
    assert "dpdk-testpmd" in commands and "net_vhost0" in commands
    logs = {p.name for p in (out / "logs").iterdir()}
    for case in ("virtio_pmd", "virtio_net"):
        for name in (
            f"qemu-{case}-host.log",
            f"qemu-{case}-backup.log",
            f"console-{case}-host.log",
            f"console-{case}-backup.log",
            f"{case}-testpmd-host.log",
            f"{case}-testpmd-backup.log",
            f"{case}-tester.log",
        ):
            assert name in logs, name
    assert "port 0/queue 0: received" in (out / "logs/console-virtio_pmd-backup.log").read_text()
    assert leftovers(data["run_id"]) == []
    assert int(HUGE_NR.read_text()) == hugepages_before


def test_no_vhost_backend_on_backup_fails(tmp_path: Path, hugepages_before: int) -> None:
    """Without a vhost backend on the backup the case must fail, and say why."""
    out = tmp_path / "run"
    proc = vhostlm("run", "--case", "virtio_net", "--no-backup-backend", "--output", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = load(out / "results.json")
    case = data["cases"][0]
    assert case["verdict"] == "fail"
    assert "no vhost-user backend on the backup" in case["reason"]
    verdicts = {s["name"]: s["verdict"] for s in case["steps"]}
    assert verdicts["backup_vm"] == "fail"
    assert verdicts["receives_after_migration"] == "skip"
    assert leftovers(data["run_id"]) == []
    assert int(HUGE_NR.read_text()) == hugepages_before
