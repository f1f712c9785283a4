"""The migration variants, one shared run of the `variants` plan, one test per variant.

`make test` runs the plan less two cases (CI time): `postcopy_virtio_net` (postcopy on
virtio-net also runs on OVS-DPDK in test_ovs.py) and `autoconverge_virtio_net` (about 50 s);
their tests run under `make test-full`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import FULL, FULL_ONLY, leftovers, load, vhostlm
from vhostlm.plans.catalog import PLANS

# make test leaves these out of the plan's run (CI time; make test-full runs them):
# postcopy_virtio_net runs on OVS (test_ovs.py), autoconverge_virtio_net takes 50 s, and
# multifd_virtio_net with parameters passed through runs in
# test_cli_migration_parameters_override_the_case, which checks what both of them check
UNSAMPLED = (
    "postcopy_virtio_net",
    "autoconverge_virtio_net",
    "multifd_virtio_net",
    "params_virtio_net",
)


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the variants plan once; its results by case name."""
    out = tmp_path_factory.mktemp("variants") / "run"
    names = [c.name for c in PLANS["variants"] if FULL or c.name not in UNSAMPLED]
    chosen = ["--plan", "variants"] if FULL else [a for n in names for a in ("--case", n)]
    proc = vhostlm("run", *chosen, "--output", str(out), timeout=1500)
    data = load(out / "results.json")
    assert leftovers(data["run_id"]) == []
    cases = {c["name"]: c for c in data["cases"]}
    cases["_exit"] = proc.returncode
    cases["_output"] = proc.stdout[-3000:] + proc.stderr[-1000:]
    cases["_commands"] = (out / "commands.sh").read_text()
    return cases


def steps(case: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in case["steps"]}


def test_the_plan_ends_green(variants: dict[str, Any]) -> None:
    assert variants["_exit"] == 0, variants["_output"]


def test_ping_pong_measures_every_leg(variants: dict[str, Any]) -> None:
    case = variants["pingpong_virtio_net"]
    assert case["verdict"] == "pass", case["reason"]
    legs = case["measure"]["legs"]
    assert [leg["to"] for leg in legs] == ["backup", "host", "backup", "host"]
    assert all(leg["status"] == "completed" and leg["qemu"]["total_time_ms"] > 0 for leg in legs)
    for leg in legs:
        # each leg's outage lasts at least the guest's pause (QEMU's downtime, less a probe
        # interval), starts after its own migrate and ends within the settle second after
        # its RESUME (the guest answers on its new side): not another leg's gap
        lo, hi = leg["window"]
        resolution = case["measure"]["resolution_ms"]
        assert leg["outage_ms"] >= leg["qemu"]["downtime_ms"] - resolution, leg
        assert leg["events"]["migrate"] <= leg["outage_start"] < leg["outage_end"] <= hi, leg
        assert lo < leg["events"]["stop"] < leg["events"]["resume"] < hi, leg
    assert case["measure"]["lost_outside_window"] == 0
    s = steps(case)
    for leg in ("", "_leg2", "_leg3", "_leg4"):
        assert s["receives_after_migration" + leg]["verdict"] == "pass"
    assert s["incoming_vm_leg2"]["verdict"] == "pass"


@FULL_ONLY
def test_postcopy_passes(variants: dict[str, Any]) -> None:
    """testpmd runs with --no-mlockall on postcopy cases: the destination can place pages."""
    case = variants["postcopy_virtio_net"]
    assert case["verdict"] == "pass", case["reason"]
    assert steps(case)["postcopy_active"]["verdict"] == "pass"
    assert case["migration"]["status"] == "completed"
    assert "ram" not in case["integrity"]["checks"]  # postcopy: no paused destination


def test_postcopy_with_testpmd_in_the_guest_passes(variants: dict[str, Any]) -> None:
    """virtio-pmd under postcopy: the destination faults pages in (QEMU counts its page
    requests), the stalls stay inside the window that runs to completion, the guest's
    testpmd forwards on the backup and its memory is whole."""
    case = variants["postcopy_virtio_pmd"]
    assert case["verdict"] == "pass", case["reason"]
    assert steps(case)["postcopy_active"]["verdict"] == "pass"
    assert case["migration"]["status"] == "completed"
    assert case["migration"]["postcopy_requests"] > 0, case["migration"]
    assert case["measure"]["lost_outside_window"] == 0, case["measure"]
    assert case["integrity"]["failure"] == "" and case["integrity"]["pages_bad"] == 0


def check_multifd(case: dict[str, Any], commands: str) -> None:
    """multifd_virtio_net passed over two channels, its destination listening only once
    multifd was set (`-incoming defer`: QEMU >= 8 wants it before the destination listens)."""
    assert case["verdict"] == "pass", case["reason"]
    assert case["options"]["migration_capabilities"]["multifd"] is True
    assert case["options"]["migration_parameters"]["multifd-channels"] == 2
    backup = [ln for ln in commands.splitlines() if "multifd_virtio_net-backup" in ln
              and "qemu-system" in ln]  # fmt: skip
    assert backup and all("-incoming defer" in ln for ln in backup)


@FULL_ONLY
def test_multifd_completes_over_two_channels(variants: dict[str, Any]) -> None:
    check_multifd(variants["multifd_virtio_net"], variants["_commands"])


@FULL_ONLY
def test_parameters_are_passed_through_and_reported(variants: dict[str, Any]) -> None:
    case = variants["params_virtio_net"]
    assert case["verdict"] == "pass", case["reason"]
    params = case["options"]["migration_parameters"]
    assert params["downtime-limit"] == 50
    assert params["max-bandwidth"] == 100 * 1024 * 1024


def test_cancel_leaves_the_guest_running_on_the_source(variants: dict[str, Any]) -> None:
    case = variants["cancel_virtio_net"]
    assert case["verdict"] == "pass", case["reason"]
    assert case["migration"]["status"] == "cancelled"
    s = steps(case)
    assert s["migration_cancelled"]["verdict"] == "pass"
    assert s["source_keeps_receiving"]["verdict"] == "pass"
    assert case["measure"]["events"]["cancelled"] > case["measure"]["events"]["migrate"]


def test_a_migration_that_cannot_converge_ends_with_its_figures(variants: dict[str, Any]) -> None:
    case = variants["noconverge_virtio_net"]
    assert case["verdict"] == "pass", case["reason"]
    detail = steps(case)["did_not_converge"]["detail"]
    assert detail.startswith("did not converge within 20 s (total ")
    assert case["migration"]["dirty_sync_count"] >= 3
    assert steps(case)["source_keeps_receiving"]["verdict"] == "pass"


@FULL_ONLY
def test_auto_converge_completes_the_same_load(variants: dict[str, Any]) -> None:
    case = variants["autoconverge_virtio_net"]
    assert case["verdict"] == "pass", case["reason"]
    assert case["migration"]["status"] == "completed"
    assert case["options"]["migration_capabilities"]["auto-converge"] is True
    assert steps(case)["guest_dirty_load"]["verdict"] == "pass"
    assert steps(case)["receives_after_migration"]["verdict"] == "pass"


def test_cli_migration_parameters_override_the_case(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = vhostlm(
        "run", "--case", "multifd_virtio_net", "--downtime-limit", "77",
        "--max-bandwidth", "800", "--guest-mem", "768", "--output", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    case = load(out / "results.json")["cases"][0]
    check_multifd(case, (out / "commands.sh").read_text())
    assert case["options"]["migration_parameters"]["downtime-limit"] == 77
    assert case["options"]["migration_parameters"]["max-bandwidth"] == 100_000_000
    assert case["options"]["guest_mem_mb"] == 768
