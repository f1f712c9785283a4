"""The user's own guest: a distro disk image booted through its bootloader, logged into on
its serial console, driven with the distro's own tools (`--guest-image FILE`).

The user's file is never written: each case boots a qcow2 overlay of it, made beside the
case's other files on the host's node (on a testbed: beside the image, on the storage host
and backup share, since the destination's QEMU opens the same overlay) and removed after
the case. The password is typed on the console and kept nowhere else.
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from vhostlm.apps.console import SHELL_PROMPT, GuestShell
from vhostlm.apps.guest import KernelReceiver, Receiver, TestPmdReceiver
from vhostlm.apps.qemu import QemuVm
from vhostlm.errors import SetupError, StepFailed, UsageError
from vhostlm.guests.base import BootFiles, Driver, Guest
from vhostlm.guests.contract import DISK_HUGEPAGES, TOOLS_SERIAL
from vhostlm.guests.initramfs import dirty_load_fill, dirty_load_loop
from vhostlm.guests.memcheck import MEMCHECK_BIN
from vhostlm.guests.tools import GUEST_DIRS, UNPACK
from vhostlm.image.host import sha256_file
from vhostlm.nodes.local import LocalNode
from vhostlm.rundir import RunDir
from vhostlm.testbed.remote import remote_sha256
from vhostlm.testbed.topology import Topology
from vhostlm.wait import Deadline

QCOW2_MAGIC = b"QFI\xfb"
LOGIN_RE = re.compile(r"login: $")
PASSWORD_RE = re.compile(r"[Pp]assword: $")
# what a shell prompt ends with once login is through, or login's refusal
AFTER_LOGIN_RE = re.compile(r"(Login incorrect)|[#$] $")
# typed after login: a plain POSIX shell with vhostlm's prompt (split in two, so that the
# echo of this very line is not taken for the prompt); kernel messages off the console
SHELL_LINE = "export PS1='vhostlm-guest''# '; exec /bin/sh"


@dataclass(frozen=True)
class DiskSpec:
    """A run's guest image: the file, its format, and the serial-console login."""

    image: Path
    fmt: str
    user: str
    password: str = field(repr=False)
    tools: Path | None = None  # vhostlm's programs for the guest (guests.tools), on this machine


def image_format(path: Path) -> str:
    """`qcow2` (its magic) or `raw` (a boot record in sector 0); UsageError for anything
    else. Read directly, so that a bad argument is refused before any program runs."""
    if not path.is_file():
        raise UsageError(f"--guest-image {path}: no such file (give a raw or qcow2 disk image)")
    try:
        with path.open("rb") as f:
            sector = f.read(512)
    except OSError as exc:
        raise UsageError(f"--guest-image {path}: cannot be read ({exc.strerror})") from exc
    if sector.startswith(QCOW2_MAGIC):
        return "qcow2"
    if len(sector) == 512 and sector[510:512] == b"\x55\xaa":  # an MBR or GPT's protective one
        return "raw"
    raise UsageError(
        f"--guest-image {path}: not a bootable disk image (no boot record in its first "
        "sector); give a raw or qcow2 disk image"
    )


class DiskGuest(Guest):
    """Boots an overlay of the user's image; logs in; a POSIX shell with vhostlm's prompt."""

    kind = "disk"

    def __init__(self, spec: DiskSpec, case: str) -> None:
        self.spec = spec
        self.case = case
        self.overlay: str | None = None
        self.tools: dict[str, str] = {}  # role -> the tools drive on its node

    def prepare(self, bed: Topology, rundir: RunDir, stack: ExitStack) -> None:
        """The case's overlay of the image, on the host's node; removed with the case."""
        node = bed.node("host")
        directory = bed.overlay_dir(str(self.spec.image)) or str(rundir.runtime)
        overlay = f"{directory}/.vhostlm-{rundir.run_id}-{self.case}.qcow2"
        node.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", self.spec.fmt,
                  "-b", str(self.spec.image), overlay])  # fmt: skip
        stack.callback(node.run, ["rm", "-f", overlay], check=False)
        self.overlay = overlay
        if self.spec.tools is not None:
            self.tools = {role: self._put_tools(bed, role, self.spec.tools)
                          for role in ("host", "backup")}  # fmt: skip

    @staticmethod
    def _put_tools(bed: Topology, role: str, tools: Path) -> str:
        """The tools drive copied into the run's directory on the role's node (checked)."""
        node = bed.node(role)
        remote = f"{bed.workdir(role)}/{tools.name}"
        node.put(tools, remote)
        if not isinstance(node, LocalNode) and remote_sha256(node, remote) != sha256_file(tools):
            raise SetupError(f"{node.label}: the copy of {tools.name} differs (checksum)")
        return remote

    def boot_files(self, bed: Topology, role: str) -> BootFiles:
        """The overlay, as the boot disk (the shared disk of a testbed beside it)."""
        if self.overlay is None:
            raise SetupError("disk guest: prepare() makes the overlay before the QEMUs start")
        disk = bed.guest_disk()
        tools = self.tools.get(role)
        return BootFiles(None, None, Path(disk) if disk else None, boot_disk=Path(self.overlay),
                         tools_disk=Path(tools) if tools else None)  # fmt: skip

    def wait_shell(self, vm: QemuVm, timeout: float) -> GuestShell:
        """Log in on the serial console within `timeout`, then start vhostlm's shell."""
        out, alive = vm.console.output, vm.process.alive
        deadline = Deadline(timeout)
        try:
            found = out.expect(LOGIN_RE, timeout, alive=alive)
        except SetupError as exc:
            raise StepFailed(
                f"the guest image did not get to a login prompt in {timeout:.0f} s "
                f"(--boot-timeout): {_last_lines(out.text())}"
            ) from exc
        vm.console.write(self.spec.user + "\n")
        found = out.expect(PASSWORD_RE, max(5.0, deadline.left()), since=found.end(), alive=alive)
        vm.console.write(self.spec.password + "\n")
        found = out.expect(AFTER_LOGIN_RE, max(30.0, deadline.left()), since=found.end(),
                           alive=alive)  # fmt: skip
        if found.group(1):
            raise StepFailed(
                f"the guest refused the login of {self.spec.user!r}: {found.group(1)} "
                "(check the password file, --guest-password-file)"
            )
        vm.console.write(SHELL_LINE + "\n")
        out.expect(re.escape(SHELL_PROMPT), 30, since=found.end(), alive=alive)
        shell = GuestShell(vm.console)
        shell.run("dmesg -n 1")  # kernel messages off the console: they would split output
        if self.tools:
            self._unpack_tools(shell)
        return shell

    @staticmethod
    def _unpack_tools(shell: GuestShell) -> None:
        """Unpack the tools drive in the guest, first on its PATH; StepFailed naming what the
        guest said when its memory checker is not there after it."""
        said = shell.run(UNPACK, timeout=60).strip().splitlines()
        if not said or said[-1].strip() not in {f"{d}/{MEMCHECK_BIN}" for d in GUEST_DIRS}:
            raise StepFailed(
                f"the guest did not unpack vhostlm's tools drive (serial {TOOLS_SERIAL}) "
                f"into any of {', '.join(GUEST_DIRS)} where its memory checker runs: "
                f"{' | '.join(said[-2:]) or 'no output'} (it needs tar and virtio_blk)"
            )

    def receiver(self, driver: Driver, probes: bool, queues: int) -> Receiver:
        """The distro's own testpmd (hugepages and uio_pci_generic set up first), or its
        kernel's virtio-net with a counter loop paced by coreutils' sleep."""
        if driver is Driver.PMD:
            return DistroTestPmdReceiver(probes)
        return KernelReceiver(probes, queues=queues, pause="sleep 0.1")

    def start_dirty_load(self, shell: GuestShell, mb_s: int) -> str:
        """Rewrite a file of `mb_s` MiB in /dev/shm (systemd's tmpfs) with non-zero data
        once a second, as the initramfs guest does (coreutils' sleep)."""
        fill, loop = dirty_load_fill(mb_s), dirty_load_loop(mb_s, pause="sleep 1")
        shell.run(fill, timeout=60)
        shell.run(loop)
        return f"{fill}; {loop}"


class DistroTestPmdReceiver(TestPmdReceiver):
    """testpmd as a distro guest has it: the seed's step 7 after reserving hugepages at run
    time and loading uio_pci_generic; a guest without DPDK makes the case a skip."""

    # Debian's testpmd as before: its own memory defaults, in DISK_HUGEPAGES (unmeasured
    # with the initramfs guest's smaller sizing)
    hugepages = DISK_HUGEPAGES
    mem_mb = None
    mbufs = None

    def start(self, shell: GuestShell) -> None:
        """Check for testpmd, mount hugetlbfs, load the module; then as in the image (which
        reserves the hugepages)."""
        if not shell.run("command -v dpdk-testpmd || true").strip():
            from vhostlm.plans.steps import CaseSkipped

            raise CaseSkipped(
                "the guest image has no dpdk-testpmd: install DPDK in it (Debian: dpdk-dev)"
            )
        for cmd in (
            "grep -qs ' /dev/hugepages ' /proc/mounts || "
            "{ mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages; }",
            "modprobe uio_pci_generic",
        ):
            self.commands.append(cmd)
            shell.run(cmd, timeout=60)
        super().start(shell)


def _last_lines(text: str, n: int = 3) -> str:
    """The console's last `n` non-empty lines, on one line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) or "nothing on the console"
