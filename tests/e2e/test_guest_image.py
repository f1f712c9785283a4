"""The user's own guest for real: the Debian disk image `vhostlm image disk` builds with
mmdebstrap, booted through its bootloader by both QEMUs, logged into on its console.

Sampled for CI time (a boot of the distro takes 60-70 s under TCG inside a run): `make
test` runs the seed plan's PMD case on it here (the guest's own testpmd) and its
kernel-driver case over SSH (test_ssh_testbed.py, guest.image); `make test-full` runs both
seed cases here. A wrong password and an image that does not boot each fail with one
reason. Bad input is in tests/unit/test_guest_image_input.py.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

from tests.e2e.conftest import leftovers, load, processes_mentioning, sampled, vhostlm
from vhostlm.report.results import validate_results


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def overlays(image: Path, run_id: str) -> list[Path]:
    """Overlays a run left beside the image or in its runtime directory."""
    beside = list(image.parent.glob(".vhostlm-*.qcow2"))
    return beside + list(Path("/run/vhostlm").glob(f"{run_id}/.vhostlm-*.qcow2"))


def test_the_seed_plan_passes_on_the_debian_image(disk_image: Path, tmp_path: Path) -> None:
    """The seed cases pass on the distro guest (its kernel's virtio-net, its own testpmd);
    the image is unchanged and no overlay is left."""
    before = digest(disk_image)
    out = tmp_path / "run"
    names = sampled(["virtio_net", "virtio_pmd"], ["virtio_pmd"])
    cases = [arg for name in names for arg in ("--case", name)]
    proc = vhostlm("run", "--guest-image", str(disk_image), *cases, "--output", str(out),
                   timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = load(out / "results.json")
    assert validate_results(data) == []
    assert data["host"]["guest_image"] == str(disk_image)
    assert [(c["name"], c["verdict"]) for c in data["cases"]] == [(n, "pass") for n in names]
    for case in data["cases"]:
        steps = {s["name"]: s for s in case["steps"]}
        assert steps["guest_boots"]["figures"]["boot_s"] > 0
        assert case["measure"]["replies"] > 0 and case["measure"]["lost_outside_window"] == 0
        assert case["integrity"]["pages_checked"] > 0  # its memory checker ran on it too
        console = (out / "logs" / f"console-{case['name']}-host.log").read_text()
        assert "Debian GNU/Linux 12" in console and "login: " in console  # its own boot
        # the image has no checker of its own: it came on vhostlm's tools drive
        assert re.search(r"\n/[a-z/]+/vhostlm/vhostlm-memcheck\r?\n", console), console[-2000:]
    pmd = (out / "logs" / "console-virtio_pmd-host.log").read_text()
    assert "nr_hugepages" in pmd and "dpdk-testpmd -l" in pmd  # reserved at run time
    password = Path(f"{disk_image}.password").read_text().strip()
    for path in out.rglob("*"):  # the password was typed, never written
        if path.is_file():
            assert password not in path.read_text(errors="replace"), path
    assert digest(disk_image) == before
    assert overlays(disk_image, data["run_id"]) == []
    assert leftovers(data["run_id"]) == []


def test_a_wrong_password_fails_naming_the_login(disk_image: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    out = tmp_path / "run"
    args = ["--guest-image", str(disk_image), "--guest-password-file", str(wrong)]
    proc = vhostlm("run", "--case", "virtio_net", *args, "--output", str(out), timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    case = load(out / "results.json")["cases"][0]
    assert case["verdict"] == "fail"
    assert case["reason"].startswith("guest_boots: the guest refused the login of 'root'")
    assert "Login incorrect" in case["reason"]
    run_id = load(out / "results.json")["run_id"]
    assert overlays(disk_image, run_id) == [] and leftovers(run_id) == []
    assert processes_mentioning(f"vhostlm-{run_id}") == []


def test_an_image_that_does_not_boot_fails_with_the_console(tmp_path: Path) -> None:
    """A disk with a boot record but no bootloader behind it: SeaBIOS finds nothing."""
    image = tmp_path / "blank.img"
    with image.open("wb") as f:
        f.truncate(16 << 20)
        f.seek(510)
        f.write(b"\x55\xaa")
    shutil.copyfile(image, tmp_path / "copy.img")  # the user's file is never written
    Path(f"{image}.password").write_text("x\n")
    out = tmp_path / "run"
    proc = vhostlm("run", "--case", "virtio_net", "--guest-image", str(image),
                   "--boot-timeout", "20", "--output", str(out), timeout=600)  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    case = load(out / "results.json")["cases"][0]
    assert case["verdict"] == "fail"
    assert case["reason"].startswith(
        "guest_boots: the guest image did not get to a login prompt in 20 s (--boot-timeout)"
    ), case["reason"]
    assert image.read_bytes() == (tmp_path / "copy.img").read_bytes()
    run_id = load(out / "results.json")["run_id"]
    assert overlays(image, run_id) == [] and leftovers(run_id) == []
