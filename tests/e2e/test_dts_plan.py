"""DPDK's eight DTS cases on the embedded lab: split and packed ring, pmd and net, mq4.

`make test` runs a sample of four: each of the four shapes once, each ring twice
(SAMPLE); `make test-full` runs all eight.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import leftovers, load, sampled, vhostlm
from vhostlm.apps.qemu import msix_vectors, qemu_version

NAMES = sorted(
    f"{ring}_{shape}"
    for ring in ("split", "packed")
    for shape in ("virtio_pmd", "virtio_pmd_vhost_late", "virtio_net", "virtio_net_mq4")
)
SAMPLE = ("split_virtio_pmd", "split_virtio_net_mq4", "packed_virtio_pmd_vhost_late",
          "packed_virtio_net")  # fmt: skip
CASES = sampled(NAMES, SAMPLE)


@pytest.fixture(scope="module")
def dts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the dts plan once: exit code, output, results by case and the command lines."""
    out = tmp_path_factory.mktemp("dts") / "run"
    chosen = ["--plan", "dts"] if CASES == NAMES else [a for n in CASES for a in ("--case", n)]
    proc = vhostlm("run", *chosen, "--output", str(out), timeout=1500)
    data = load(out / "results.json")
    return {
        "exit": proc.returncode,
        "output": proc.stdout[-4000:] + proc.stderr[-2000:],
        "cases": {c["name"]: c for c in data["cases"]},
        "commands": (out / "commands.sh").read_text().splitlines(),
        "leftovers": leftovers(data["run_id"]),
        "vectors": msix_vectors(4, data["accel"], qemu_version(data["versions"]["qemu"])),
    }


def test_dts_plan_cases_pass(dts: dict[str, Any]) -> None:
    assert dts["exit"] == 0, dts["output"]
    cases = dts["cases"]
    assert sorted(cases) == sorted(CASES)
    for name, case in cases.items():
        assert case["verdict"] == "pass", (name, case["reason"])
        assert case["migration"]["status"] == "completed"
        assert case["traffic"]["received_after"] >= 10
        assert case["options"]["packed"] == name.startswith("packed")
        assert case["options"]["queues"] == (4 if name.endswith("mq4") else 1)
    for name in (n for n in cases if n.endswith("_virtio_pmd_vhost_late")):
        late = {s["name"]: s for s in cases[name]["steps"]}
        assert late["guest_testpmd"]["detail"].endswith("(host testpmd) start")
    assert any(n.startswith("packed_") for n in cases), "the sample keeps a packed ring case"
    packed_qemu = [ln for ln in dts["commands"] if "qemu-system" in ln and "packed_" in ln]
    assert packed_qemu and all("packed=on" in ln for ln in packed_qemu)
    assert dts["leftovers"] == []


def test_mq4_cases_change_queues_while_migrating(dts: dict[str, Any]) -> None:
    mq4 = [n for n in CASES if n.endswith("_mq4")]
    assert mq4, CASES
    for name in mq4:
        steps = {s["name"]: s for s in dts["cases"][name]["steps"]}
        ethtool = steps["guest_queues_during_migration"]
        assert ethtool["verdict"] == "pass", ethtool["detail"]
        assert "ethtool -L eth0 combined 4" in ethtool["detail"]
        assert steps["receives_after_migration"]["verdict"] == "pass"
    mq_qemu = [ln for ln in dts["commands"] if "qemu-system" in ln and "mq4" in ln]
    assert mq_qemu and all("mq=on" in ln and "queues=4" in ln for ln in mq_qemu)
    # MSI-X vectors as DTS gives them (10 for 4 queue pairs) where this QEMU can
    assert all(f"vectors={dts['vectors']}" in ln for ln in mq_qemu)
    mq_cases = [c for n, c in dts["cases"].items() if "mq4" in n]
    assert all(c["options"]["vectors"] == dts["vectors"] for c in mq_cases)
    mq_pmd = [ln for ln in dts["commands"] if "dpdk-testpmd" in ln and "mq4" in ln]
    assert mq_pmd and all("--rxq=4" in ln and "queues=4" in ln for ln in mq_pmd)
