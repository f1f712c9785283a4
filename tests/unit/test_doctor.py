"""The doctor's table and verdict, and its reading of QEMU's version."""

from __future__ import annotations

from vhostlm.doctor import Doctor, qemu_fitness, qemu_version


def test_qemu_version_parsing() -> None:
    assert qemu_version("QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u16)") == (7, 2)
    assert qemu_version("QEMU emulator version 10.1.0") == (10, 1)
    assert qemu_version("command not found") is None


def test_qemu_before_9_fails_under_tcg_and_warns_under_kvm() -> None:
    assert qemu_fitness((7, 2), kvm=False)[0] is False
    assert "9.0" in qemu_fitness((7, 2), kvm=False)[1]
    assert qemu_fitness((8, 2), kvm=True)[0] is None
    assert qemu_fitness((9, 0), kvm=False) == (True, "")
    assert qemu_fitness((10, 0), kvm=True) == (True, "")


def test_a_failed_check_fails_the_verdict_a_warning_does_not() -> None:
    doc = Doctor()
    doc.add("host", "kvm", None, "TCG only", "guests run slower under TCG")
    assert doc.ok
    doc.add("backup", "hugepages", False, "0 MiB free, 1216 MiB needed", "echo N > ...")
    assert not doc.ok
    lines = doc.table().splitlines()
    assert lines[0].split() == ["node", "check", "detail", "fix"]
    assert lines[1].split()[:3] == ["host", "kvm", "warn"]
    assert lines[2].split()[:3] == ["backup", "hugepages", "FAIL"]
    assert lines[2].endswith("echo N > ...")


def test_guarded_turns_an_error_into_a_failed_line() -> None:
    doc = Doctor()

    def boom(what: str) -> None:
        raise OSError(f"{what}: connection lost")

    doc.guarded("tester", "port", boom, "tester (ssh)")
    assert not doc.ok
    assert doc.checks[0].what == "port" and "connection lost" in doc.checks[0].detail
