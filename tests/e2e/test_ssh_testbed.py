"""The SSH path for real: sshd in each lab namespace, the seed plan driven over SSH.

`vhostlm lab up --ssh` starts an sshd per role with keys made for the lab and writes a
testbed file; the same cases then run through asyncssh (commands, pty programs, SFTP,
unix-socket forwarding) exactly as on three servers.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import leftovers, load, processes_mentioning, vhostlm
from vhostlm.report.results import validate_results

RUNTIME = Path("/run/vhostlm")
PWNED = Path("/tmp/vl-pwned")
HOSTILE_WORKDIR = f"/tmp/v;touch {PWNED}"  # short: sockets live under a node's workdir


@pytest.fixture(scope="module")
def ssh_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(lab id, testbed file) of an SSH lab, removed after the module."""
    out = tmp_path_factory.mktemp("sshlab")
    proc = vhostlm("lab", "up", "--ssh", "--output", str(out), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lab_id = re.search(r"lab (\w+) is up", proc.stdout)
    assert lab_id, proc.stdout
    try:
        yield lab_id[1], out / "testbed.yaml"
    finally:
        down = vhostlm("lab", "down", lab_id[1])
        assert down.returncode == 0, down.stderr
        assert leftovers(lab_id[1]) == []


def variant(testbed: Path, tmp_path: Path, change: dict[str, object], role: str) -> Path:
    """A copy of the testbed file with `change` merged into node `role`."""
    data = yaml.safe_load(testbed.read_text())
    for key, value in change.items():
        if isinstance(value, dict):
            data["nodes"][role][key].update(value)
        else:
            data["nodes"][role][key] = value
    path = tmp_path / "testbed.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_doctor_passes_on_the_ssh_lab(ssh_lab: tuple[str, Path]) -> None:
    """Every node reachable as root, QEMU/testpmd/PMDs found, hugepages, migration port."""
    proc = vhostlm("doctor", "--testbed", str(ssh_lab[1]), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "can run the plan" in proc.stdout
    for role in ("host", "backup", "tester"):
        assert re.search(rf"^{role}\s+reachable\s+ok", proc.stdout, re.M), proc.stdout
    assert re.search(r"^host->backup\s+migration\s+ok", proc.stdout, re.M), proc.stdout


def test_seed_plan_over_ssh_passes_and_leaves_nothing(
    ssh_lab: tuple[str, Path], tmp_path: Path
) -> None:
    """Both seed cases pass through SSH (with a shared disk, migration TLS whose credentials
    are copied to the nodes, and a hostile tester workdir that must stay data); the nodes'
    run directories and processes go."""
    lab_id = ssh_lab[0]
    disk = tmp_path / "shared-disk.img"  # the seed's NFS image: host and backup see one file
    disk.write_bytes(b"vhostlm" * 4096)
    data = yaml.safe_load(ssh_lab[1].read_text())
    data["guest"]["disk"] = str(disk)
    # a hostile value in a config field: every remote command carries the tester's workdir
    PWNED.unlink(missing_ok=True)
    data["nodes"]["tester"]["workdir"] = HOSTILE_WORKDIR
    testbed = tmp_path / "testbed.yaml"
    testbed.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    proc = vhostlm("run", "--testbed", str(testbed), "--output", str(out), "--migration-tls",
                   timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = load(out / "results.json")
    assert validate_results(data) == []
    assert data["testbed"] == f"ssh:{testbed}"
    assert all(c["options"]["migration_tls"] for c in data["cases"])  # credentials staged
    assert data["host"]["guest_disk_sha256"] == hashlib.sha256(disk.read_bytes()).hexdigest()
    assert data["host"]["guest_disk_mount_host"] == data["host"]["guest_disk_mount_backup"]
    assert [c["verdict"] for c in data["cases"]] == ["pass", "pass"]
    for case in data["cases"]:
        assert case["measure"]["replies"] > 0
        assert case["measure"]["legs"][0]["status"] == "completed"
    commands = (out / "commands.sh").read_text()
    assert "on host (root@198.19." in commands and "on backup (root@198.19." in commands
    assert f"file={disk},if=none,id=disk0,format=raw,readonly=on" in commands
    run_id = data["run_id"]
    assert leftovers(run_id) == []
    assert processes_mentioning(f"vhostlm-{run_id}") == []
    for role in ("host", "backup"):
        workdir = Path(f"/run/vhostlm/{lab_id}/node-{role}")
        assert list(workdir.iterdir()) == [], f"{role} kept {list(workdir.iterdir())}"
    assert not PWNED.exists(), "a testbed value was run as a shell command"
    hostile = Path(HOSTILE_WORKDIR)
    assert hostile.is_dir() and list(hostile.iterdir()) == []  # it was a directory name
    for made in (hostile, *hostile.parents):  # mkdir -p made its parents too
        if made == Path("/tmp"):
            break
        made.rmdir()


def test_the_seed_plan_over_ssh_boots_the_testbeds_guest_image(
    ssh_lab: tuple[str, Path], tmp_path: Path, disk_image: Path
) -> None:
    """guest.image in the testbed file: host and backup see the one image (checksummed),
    both QEMUs boot an overlay beside it, the seed's kernel-driver case passes with the
    memory checker copied to both nodes on its drive; nothing is left there. Sampled for
    CI time: the PMD case on the image runs on the lab (test_guest_image.py)."""
    data = yaml.safe_load(ssh_lab[1].read_text())
    data["guest"]["image"] = str(disk_image)  # the lab's nodes share this filesystem
    testbed = tmp_path / "testbed.yaml"
    testbed.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    proc = vhostlm("run", "--testbed", str(testbed), "--case", "virtio_net",
                   "--output", str(out), timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = load(out / "results.json")
    assert [c["verdict"] for c in result["cases"]] == ["pass"]
    assert result["cases"][0]["integrity"]["pages_checked"] > 0
    assert result["host"]["guest_image"] == str(disk_image)
    digest = hashlib.sha256(disk_image.read_bytes()).hexdigest()
    assert result["host"]["guest_image_sha256"] == digest  # unchanged, and seen by both
    assert result["host"]["guest_image_mount_host"] == result["host"]["guest_image_mount_backup"]
    commands = (out / "commands.sh").read_text()
    assert f"file={disk_image.parent}/.vhostlm-{result['run_id']}-virtio_net.qcow2" in commands
    assert "serial=vhostlm-tools" in commands and "/vhostlm-tools.tar," in commands
    assert list(disk_image.parent.glob(".vhostlm-*.qcow2")) == []


SKEW_S = -2.5  # the backup's programs read a wall clock 2.5 s behind (libfaketime)


def s2r_and_announce(out: Path) -> tuple[float, float, dict[str, dict[str, float]]]:
    """(STOP->RESUME ms, announce after RESUME ms, clocks) of a passed virtio_net run."""
    data = load(out / "results.json")
    assert validate_results(data) == []
    case = data["cases"][0]
    assert case["verdict"] == "pass", case["reason"]
    m = case["measure"]
    return m["stop_to_resume_ms"], m["announce"]["after_resume_ms"], data["clocks"]


def test_a_skewed_clock_is_measured_and_corrected(
    ssh_lab: tuple[str, Path], tmp_path: Path
) -> None:
    """A backup 2.5 s behind: its offset is measured within its uncertainty, and the figures
    that subtract its QEMU's RESUME from the host's STOP and the tester's announce match an
    unskewed run; uncorrected, they would be 2.5 s off."""
    plain = tmp_path / "plain"
    proc = vhostlm("run", "--testbed", str(ssh_lab[1]), "--case", "virtio_net",
                   "--output", str(plain), timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    up = vhostlm("lab", "up", "--ssh", "--clock-skew", f"backup={SKEW_S}",
                 "--output", str(tmp_path / "lab"), timeout=300)  # fmt: skip
    assert up.returncode == 0, up.stdout + up.stderr
    lab_id = re.search(r"lab (\w+) is up", up.stdout)
    assert lab_id, up.stdout
    try:
        skewed = tmp_path / "skewed"
        proc = vhostlm("run", "--testbed", str(tmp_path / "lab" / "testbed.yaml"),
                       "--case", "virtio_net", "--output", str(skewed), timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        assert vhostlm("lab", "down", lab_id[1]).returncode == 0
    assert leftovers(lab_id[1]) == []
    s2r0, ann0, clocks0 = s2r_and_announce(plain)
    s2r, ann, clocks = s2r_and_announce(skewed)
    for role in ("host", "backup", "tester"):  # unskewed: every offset is 0 within its bound
        c = clocks0[role]
        assert not c["same_clock"] and c["readings"] >= 3, c
        assert abs(c["offset_ms"]) <= c["uncertainty_ms"] + 0.01, (role, c)
        assert c["uncertainty_ms"] < 1.0, (role, c)  # one namespace hop: well under 1 ms
    backup = clocks["backup"]  # the skew itself, found within its uncertainty
    assert abs(backup["offset_ms"] - SKEW_S * 1000) <= backup["uncertainty_ms"] + 0.01, backup
    for role in ("host", "tester"):
        assert abs(clocks[role]["offset_ms"]) <= clocks[role]["uncertainty_ms"] + 0.01
    # corrected, the skewed run's figures are of the unskewed run's size; the raw ones
    # (the backup's own clock) would be off by the skew
    spread = 250.0  # ms: two runs of the case differ by tens of ms (TCG, a busy machine)
    assert 0 < s2r < spread and abs(s2r - s2r0) < spread, (s2r, s2r0)
    assert abs((s2r + SKEW_S * 1000) - s2r0) > 2000
    assert -1 < ann < 1000 and abs(ann - ann0) < 1000, (ann, ann0)
    assert abs((ann - SKEW_S * 1000) - ann0) > 1500
    assert re.search(r"clocks \(node - controller\):.* backup -2(499\.9|500\.0)\d\d ±", proc.stdout)


@pytest.mark.parametrize(
    ("role", "change", "expected"),
    [
        ("host", {"ssh": {"port": 2222}}, r"node host: 198\.19\.\S+:2222 refused the connection"),
        (
            "backup",
            {"qemu": "/nonexistent/qemu-system-x86_64"},
            r"node backup: /nonexistent/qemu-system-x86_64 not found on backup \(root@",
        ),
        ("tester", {"python": "no-such-python3"}, r"node tester: no-such-python3 not found"),
    ],  # fmt: skip
    ids=["refused", "missing-binary", "missing-python"],
)
def test_bad_node_gives_one_line_naming_it(
    ssh_lab: tuple[str, Path], tmp_path: Path, role: str, change: dict[str, object], expected: str
) -> None:
    """A node that cannot be used stops the run before anything starts, exit 2."""
    path = variant(ssh_lab[1], tmp_path, change, role)
    before = set(RUNTIME.iterdir())
    proc = vhostlm("run", "--testbed", str(path), "--output", str(tmp_path / "run"), timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert re.search(expected, lines[0]), lines[0]
    assert set(RUNTIME.iterdir()) <= before  # no run directory left behind


def test_wrong_host_key_is_refused(ssh_lab: tuple[str, Path], tmp_path: Path) -> None:
    """A host key that is not the one in known_hosts: one line naming the node, exit 2."""
    testbed = yaml.safe_load(ssh_lab[1].read_text())
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)  # fmt: skip
    other = (tmp_path / "k.pub").read_text().split()[:2]
    addr = testbed["nodes"]["host"]["ssh"]["address"]
    known = Path(testbed["nodes"]["host"]["ssh"]["known_hosts"]).read_text().splitlines()
    lines = [ln if not ln.startswith(f"{addr} ") else f"{addr} {' '.join(other)}" for ln in known]
    (tmp_path / "known_hosts").write_text("\n".join(lines) + "\n")
    path = variant(ssh_lab[1], tmp_path, {"ssh": {"known_hosts": str(tmp_path / "known_hosts")}},
                   "host")  # fmt: skip
    proc = vhostlm("run", "--testbed", str(path), "--output", str(tmp_path / "run"), timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert re.search(r"node host: host key of 198\.19\.\S+:22 is not the one in", lines[0])


def marked_processes(run_id: str) -> list[str]:
    """Processes started for run `run_id` on any node (SSH programs carry VHOSTLM_RUN)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if f"VHOSTLM_RUN={run_id}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append(proc.name)
        except OSError:
            continue
    return found


def test_kill_9_mid_run_then_lab_down_cleans_the_nodes(
    ssh_lab: tuple[str, Path], tmp_path: Path
) -> None:
    """vhostlm killed with SIGKILL while the guest runs: `lab down ID` reconnects with the
    recorded testbed file and removes the nodes' processes and run directories."""
    lab_id, testbed = ssh_lab
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vhostlm", "run", "--testbed", str(testbed), "--case",
         "virtio_net", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "guest_receives" in line or "vhost_connected" in line:
            break
    else:
        pytest.fail("the run ended before the guest was up: " + "".join(seen[-5:]))
    run_id = re.search(r"run (\w+): output", "".join(seen))[1]  # type: ignore[index]
    assert marked_processes(run_id), "no process of the run found on the nodes"
    proc.kill()
    proc.wait(10)
    down = vhostlm("lab", "down", run_id)
    assert down.returncode == 0, down.stdout + down.stderr
    assert marked_processes(run_id) == []
    assert leftovers(run_id) == []
    for role in ("host", "backup", "tester"):
        assert list(Path(f"/run/vhostlm/{lab_id}/node-{role}").iterdir()) == []


def test_doctor_without_testbed_checks_this_machine() -> None:
    """The embedded lab's needs: QEMU, testpmd and its PMDs, ip, tcpdump, sshd, memory."""
    proc = vhostlm("doctor", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^local\s+pmd net_vhost\s+ok", proc.stdout, re.M), proc.stdout
    assert "this machine can run the plan" in proc.stdout
