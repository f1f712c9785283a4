"""The drive that brings vhostlm's memory checker into a user's image: what it holds, that
the checker on it runs on any x86-64 Linux (static), and how QEMU attaches it."""

from __future__ import annotations

import stat
import subprocess
import tarfile
from pathlib import Path

from tests.unit.test_qemu_argv import opt, spec
from vhostlm.apps.qemu import qemu_argv
from vhostlm.guests.tools import build_tools_disk, unpack_command


def test_the_drive_is_a_tar_of_the_static_checker_in_whole_sectors(tmp_path: Path) -> None:
    drive = build_tools_disk(tmp_path)
    assert drive.stat().st_size % 512 == 0  # a block device is whole sectors
    with tarfile.open(drive) as tar:
        [member] = tar.getmembers()
        assert member.name == "vhostlm-memcheck" and member.isfile()
        assert member.mode & stat.S_IXUSR
        out = tmp_path / "x"
        tar.extractall(out, filter="data")
    binary = out / "vhostlm-memcheck"
    assert binary.read_bytes()[:4] == b"\x7fELF"
    # no program interpreter: the binary needs no library of the guest's distro
    headers = subprocess.run(["readelf", "-l", str(binary)], capture_output=True, text=True)
    assert "INTERP" not in headers.stdout and "LOAD" in headers.stdout, headers.stdout
    # it runs: without arguments it names its usage, as a checker would
    ran = subprocess.run([str(binary), "--help"], capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stdout.startswith("usage: vhostlm-memcheck"), ran


def test_it_is_built_once_for_the_same_inputs(tmp_path: Path) -> None:
    first = build_tools_disk(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert build_tools_disk(tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [first.name]


def test_qemu_attaches_it_read_only_with_the_serial_the_guest_looks_for() -> None:
    argv = qemu_argv(spec(kernel=None, initrd=None, boot_disk=Path("/r/ov.qcow2"),
                          tools_disk=Path("/r/vhostlm-tools.tar")))  # fmt: skip
    drives, devices = opt(argv, "-drive"), opt(argv, "-device")
    assert "file=/r/vhostlm-tools.tar,if=none,id=tools0,format=raw,readonly=on" in drives
    assert "virtio-blk-pci,drive=tools0,serial=vhostlm-tools" in devices
    assert not any("tools0" in d for d in opt(qemu_argv(spec()), "-drive"))


def fake_guest(tmp_path: Path) -> tuple[Path, Path]:
    """A fake /sys/block and /dev: vda (another disk, not a tar) and vdb (the drive)."""
    drive = build_tools_disk(tmp_path / "cache")
    block, dev = tmp_path / "block", tmp_path / "dev"
    for name, serial in (("vda", "root-disk"), ("vdb", "vhostlm-tools")):
        (block / name).mkdir(parents=True)
        (block / name / "serial").write_text(serial)
    dev.mkdir()
    (dev / "vda").write_bytes(b"not a tar")  # tar would fail on it if it were tried
    (dev / "vdb").write_bytes(drive.read_bytes())
    return block, dev


def sh(line: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", line], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"})  # fmt: skip


def test_the_guest_finds_it_by_its_serial_unpacks_it_and_runs_it_from_path(
    tmp_path: Path,
) -> None:
    """The guest's line, run by a real shell on a fake /sys/block and /dev: the disk with
    the other serial is left alone, the checker is unpacked and found first on PATH."""
    block, dev = fake_guest(tmp_path)
    into = tmp_path / "run"
    done = sh(unpack_command(str(block), str(dev), [str(into)]) + "; vhostlm-memcheck --help")
    lines = done.stdout.strip().splitlines()
    assert lines[0] == f"{into}/vhostlm-memcheck", done
    assert lines[1].startswith("usage: vhostlm-memcheck --mb N"), lines  # it ran, from PATH
    assert sorted(p.name for p in into.iterdir()) == ["vhostlm-memcheck"]


def test_where_it_cannot_be_unpacked_the_next_place_is_tried(tmp_path: Path) -> None:
    """The first place cannot hold it (here: under a plain file; in Debian: /run, noexec):
    the second one is used and named."""
    block, dev = fake_guest(tmp_path)
    (tmp_path / "file").write_text("")
    first, second = tmp_path / "file" / "x", tmp_path / "second"
    done = sh(unpack_command(str(block), str(dev), [str(first), str(second)]))
    assert done.stdout.strip() == f"{second}/vhostlm-memcheck", done


def test_without_the_drive_the_line_says_nothing(tmp_path: Path) -> None:
    (tmp_path / "block").mkdir()
    done = sh(unpack_command(str(tmp_path / "block"), str(tmp_path), [str(tmp_path / "run")]))
    assert done.stdout.strip() == "" and done.returncode == 0, done
