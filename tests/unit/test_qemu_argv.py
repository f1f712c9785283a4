"""The QEMU command line mirrors the seed's, with unix sockets and the lab's fixes."""

from __future__ import annotations

from pathlib import Path

import pytest

from vhostlm.apps.qemu import VmSpec, msix_vectors, qemu_argv, qemu_version, reconnect_option


def spec(**kw: object) -> VmSpec:
    base: dict[str, object] = dict(
        name="vm1host",
        kernel=Path("/img/vmlinuz"),
        initrd=Path("/img/initrd.gz"),
        vhost_socket=Path("/run/v/vhost.sock"),
        qmp_socket=Path("/run/v/qmp.sock"),
        console_socket=Path("/run/v/console.sock"),
    )
    base.update(kw)
    return VmSpec(**base)  # type: ignore[arg-type]


def opt(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_source_has_seed_devices_and_no_tcp_listener() -> None:
    argv = qemu_argv(spec(mem_path=Path("/huge")))
    assert opt(argv, "-object") == ["memory-backend-file,id=mem,size=1024M,mem-path=/huge,share=on"]
    assert opt(argv, "-numa") == ["node,memdev=mem"]
    assert "socket,id=char0,path=/run/v/vhost.sock" in opt(argv, "-chardev")
    netdev = opt(argv, "-netdev")[0]
    assert netdev.startswith("type=vhost-user,id=netdev0,chardev=char0,vhostforce=on")
    device = opt(argv, "-device")[0]
    assert "mac=52:54:00:00:00:01" in device and "vectors=0" in device
    assert "mq=on" not in device and "packed=on" not in device
    assert opt(argv, "-qmp") == ["unix:/run/v/qmp.sock,server=on,wait=off"]
    assert "-incoming" not in argv
    assert not any("telnet" in a or "tcp:" in a for a in argv)


def test_destination_listens_for_incoming_and_shapes_pass_through() -> None:
    argv = qemu_argv(
        spec(
            incoming="tcp:198.18.0.2:4444",
            queues=4,
            packed=True,
            accel="kvm",
            cpu="host",
            mem_mb=2048,
            smp=4,
        )
    )
    assert opt(argv, "-incoming") == ["tcp:198.18.0.2:4444"]
    assert opt(argv, "-machine") == ["pc"]
    assert opt(argv, "-accel") == ["kvm"]
    assert opt(argv, "-cpu") == ["host"]
    assert opt(argv, "-smp") == ["4"]
    assert opt(argv, "-object") == ["memory-backend-memfd,id=mem,size=2048M,share=on"]
    assert "queues=4" in opt(argv, "-netdev")[0]
    device = opt(argv, "-device")[0]
    assert "mq=on" in device and "packed=on" in device


def test_shared_disk_is_attached_read_only() -> None:
    assert "-drive" not in qemu_argv(spec())
    argv = qemu_argv(spec(disk=Path("/nfs/guest.img")))
    assert opt(argv, "-drive") == ["file=/nfs/guest.img,if=none,id=disk0,format=raw,readonly=on"]
    assert "virtio-blk-pci,drive=disk0" in opt(argv, "-device")


def test_deferred_destination_listens_only_at_migrate_incoming() -> None:
    argv = qemu_argv(spec(incoming="tcp:198.18.0.2:4444", defer_incoming=True))
    assert opt(argv, "-incoming") == ["defer"]


def test_msix_vectors_as_dts_except_where_qemu_crashes_with_them() -> None:
    assert msix_vectors(4, "tcg", (10, 0)) == 10
    assert msix_vectors(1, "tcg", (10, 1)) == 4
    assert msix_vectors(4, "kvm", (7, 2)) == 10
    assert msix_vectors(4, "tcg", (7, 2)) == 0  # QEMU 7.2 segfaults with MSI-X under TCG
    assert msix_vectors(1, "tcg", None) == 0
    device = opt(qemu_argv(spec(vectors=10, queues=4)), "-device")[0]
    assert "vectors=10" in device and "mq=on" in device


def test_qemu_version_from_a_bare_number_or_the_banner() -> None:
    assert qemu_version("10.0.2") == (10, 0)
    assert qemu_version("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)") == (7, 2)
    assert qemu_version("") is None


def test_memcheck_port_hold_and_vhost_server_only_when_asked() -> None:
    plain = qemu_argv(spec(incoming="tcp:198.18.0.2:4444"))
    assert "-S" not in plain and opt(plain, "-serial") == ["chardev:ser0"]
    assert "socket,id=char0,path=/run/v/vhost.sock" in opt(plain, "-chardev")
    argv = qemu_argv(
        spec(
            incoming="tcp:198.18.0.2:4444",
            hold=True,
            vhost_server=True,
            check_socket=Path("/run/v/mc.sock"),
        )
    )
    assert argv[argv.index("-incoming") + 2] == "-S"  # paused once the migration is in
    # QEMU listens for the backend (vhost-user client mode of the backend)
    assert "socket,id=char0,path=/run/v/vhost.sock,server=on,wait=off" in opt(argv, "-chardev")
    # the memory checker's port is the guest's second serial port, after the console
    assert opt(argv, "-serial") == ["chardev:ser0", "chardev:ser1"]
    assert "socket,id=ser1,path=/run/v/mc.sock,server=on,wait=off" in opt(argv, "-chardev")


def test_qemu_as_the_vhost_user_client_reconnects_only_when_asked() -> None:
    """A server-mode backend restarted on purpose: QEMU, its client, connects again every
    reconnect_ms; the option's name by the QEMU in use (reconnect-ms since 9.2)."""
    plain = opt(qemu_argv(spec()), "-chardev")[0]
    assert plain == "socket,id=char0,path=/run/v/vhost.sock"  # no retry: a backend gone stays gone
    argv = qemu_argv(spec(reconnect_ms=100, qemu_version=(10, 0)))
    assert opt(argv, "-chardev")[0] == "socket,id=char0,path=/run/v/vhost.sock,reconnect-ms=100"
    old = opt(qemu_argv(spec(reconnect_ms=100, qemu_version=(9, 1))), "-chardev")[0]
    assert old == "socket,id=char0,path=/run/v/vhost.sock,reconnect=1"
    # the console, the checker and QMP listen as before: only the vhost-user socket retries
    assert not any("reconnect" in c for c in opt(argv, "-chardev")[1:])
    assert not any("reconnect" in a for a in opt(argv, "-qmp"))


def test_reconnect_option_by_qemu_version() -> None:
    assert reconnect_option(100, (9, 2)) == "reconnect-ms=100"
    assert reconnect_option(250, (10, 2)) == "reconnect-ms=250"  # 10.2 has only this one
    assert reconnect_option(100, None) == "reconnect-ms=100"  # not known: the current name
    assert reconnect_option(100, (9, 1)) == "reconnect=1"  # whole seconds, rounded up
    assert reconnect_option(1000, (8, 2)) == "reconnect=1"
    assert reconnect_option(1001, (7, 2)) == "reconnect=2"
    with pytest.raises(ValueError, match="positive"):
        reconnect_option(0, (10, 0))


def test_a_listening_vhost_socket_takes_no_reconnect() -> None:
    """server=on: the backend reconnects; QEMU 10.2 refuses reconnect-ms on a listener."""
    with pytest.raises(ValueError, match="reconnect_ms is for QEMU as the vhost-user client"):
        spec(vhost_server=True, reconnect_ms=100)
