"""The user's-image guest, in the parts that need no VM: the image's format read from its
first sector, the module pruning of `vhostlm image disk`, QEMU's boot-disk command line
and the password file's default place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.unit.test_qemu_argv import opt, spec
from vhostlm.apps.qemu import qemu_argv
from vhostlm.errors import UsageError
from vhostlm.guests.disk import image_format
from vhostlm.image.disk import mask_units, module_closure, password_file
from vhostlm.options import guest_password_file


def sector(tail: bytes, head: bytes = b"") -> bytes:
    return head + b"\0" * (510 - len(head)) + tail


def test_qcow2_is_known_by_its_magic_and_raw_by_its_boot_record(tmp_path: Path) -> None:
    qcow = tmp_path / "a.qcow2"
    qcow.write_bytes(b"QFI\xfb\x00\x00\x00\x03" + b"\0" * 600)
    raw = tmp_path / "a.img"
    raw.write_bytes(sector(b"\x55\xaa") + b"\0" * 4096)
    assert image_format(qcow) == "qcow2"
    assert image_format(raw) == "raw"


@pytest.mark.parametrize(
    "content", [b"", b"hello", sector(b"\xaa\x55"), b"\x7fELF" + b"\0" * 1000], ids=str
)
def test_anything_else_is_refused_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.img"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=r"x\.img: not a bootable disk image"):
        image_format(path)


def test_a_missing_image_or_a_directory_is_no_such_file(tmp_path: Path) -> None:
    for path in (tmp_path / "nope.img", tmp_path):
        with pytest.raises(UsageError, match="no such file"):
            image_format(path)


DEP = """kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz \
kernel/net/core/failover.ko.xz
kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz
kernel/net/core/failover.ko.xz:
kernel/drivers/block/virtio_blk.ko.xz:
kernel/sound/core/snd.ko.xz: kernel/sound/core/snd-timer.ko.xz
kernel/sound/core/snd-timer.ko.xz:
kernel/drivers/uio/uio_pci_generic.ko.xz: kernel/drivers/uio/uio.ko.xz
kernel/drivers/uio/uio.ko.xz:
"""


def test_the_kept_modules_are_the_wanted_ones_and_their_dependencies() -> None:
    kept = module_closure(DEP, ["virtio_net", "uio_pci_generic", "not_in_this_kernel"])
    assert kept == {
        "kernel/drivers/net/virtio_net.ko.xz",
        "kernel/drivers/net/net_failover.ko.xz",
        "kernel/net/core/failover.ko.xz",
        "kernel/drivers/uio/uio_pci_generic.ko.xz",
        "kernel/drivers/uio/uio.ko.xz",
    }
    assert module_closure(DEP, ["snd_timer"]) == {"kernel/sound/core/snd-timer.ko.xz"}


def test_a_boot_disk_replaces_kernel_and_initrd() -> None:
    argv = qemu_argv(spec(kernel=None, initrd=None, boot_disk=Path("/run/x/ov.qcow2")))
    assert "-kernel" not in argv and "-initrd" not in argv and "-append" not in argv
    assert "file=/run/x/ov.qcow2,if=none,id=boot0,format=qcow2" in opt(argv, "-drive")
    assert "virtio-blk-pci,drive=boot0,bootindex=1" in opt(argv, "-device")
    assert "-kernel" in qemu_argv(spec())  # the initramfs guest still boots its kernel


def test_the_password_file_defaults_to_beside_the_image(tmp_path: Path) -> None:
    image = tmp_path / "debian.qcow2"
    assert password_file(image) == tmp_path / "debian.qcow2.password"
    assert guest_password_file(image, None) == password_file(image)
    assert guest_password_file(image, tmp_path / "pw") == tmp_path / "pw"


def test_masked_units_point_at_dev_null_even_over_an_existing_file(tmp_path: Path) -> None:
    """A unit masked in the image is what `systemctl mask` leaves: a link to /dev/null, also
    where the package put a unit file of that name (it is replaced, not kept)."""
    units = tmp_path / "etc/systemd/system"
    units.mkdir(parents=True)
    (units / "dpdk.service").write_text("[Service]\n")
    mask_units(units, ("dpdk.service", "e2scrub_reap.service"))
    for name in ("dpdk.service", "e2scrub_reap.service"):
        assert os.readlink(units / name) == "/dev/null"
