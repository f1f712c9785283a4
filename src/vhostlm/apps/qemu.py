"""Driver of a QEMU guest with a vhost-user NIC: command line, QMP, serial console."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from qemu.qmp import ExecuteError
from qemu.qmp.legacy import QEMUMonitorProtocol

from vhostlm.addresses import GUEST_MAC, QEMU_BINARY
from vhostlm.apps.console import Console
from vhostlm.errors import SetupError, UsageError
from vhostlm.guests.contract import TOOLS_SERIAL
from vhostlm.nodes.base import Node
from vhostlm.rundir import RunDir
from vhostlm.wait import Deadline, wait_until

# MSI-X on the vhost-user virtio-net-pci under TCG: QEMU 7.2 segfaults in
# msix_set_vector_notifiers when the guest driver starts the device; 10.0 works.
MSIX_TCG_QEMU = (10, 0)
# A client socket chardev's reconnect delay: `reconnect-ms=<ms>` since QEMU 9.2
# (qapi/char.json ChardevSocket "@reconnect-ms ... (Since: 9.2)"); before it only
# `reconnect=<seconds>` (since 2.2), deprecated in 9.2 and removed in 10.2
# (docs/about/removed-features.rst, "chardev: remove deprecated 'reconnect' option").
RECONNECT_MS_QEMU = (9, 2)


class QmpTimeout(SetupError):
    """QEMU is alive but did not answer a command, or the awaited event did not come."""


class QemuGone(SetupError):
    """The QEMU process has exited: nothing it could still say will arrive."""


class MigrationStatus(StrEnum):
    """QEMU's MigrationStatus (qapi/migration.json), as query-migrate and MIGRATION say."""

    NONE = "none"
    SETUP = "setup"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    ACTIVE = "active"
    POSTCOPY_DEVICE = "postcopy-device"
    POSTCOPY_ACTIVE = "postcopy-active"
    POSTCOPY_PAUSED = "postcopy-paused"
    POSTCOPY_RECOVER_SETUP = "postcopy-recover-setup"
    POSTCOPY_RECOVER = "postcopy-recover"
    COMPLETED = "completed"
    FAILED = "failed"
    COLO = "colo"
    PRE_SWITCHOVER = "pre-switchover"
    DEVICE = "device"
    WAIT_UNPLUG = "wait-unplug"
    UNKNOWN = "unknown"  # a state this vhostlm does not know yet (a newer QEMU)

    @classmethod
    def parse(cls, value: object) -> MigrationStatus:
        """The status named `value`; UNKNOWN for one this list lacks."""
        try:
            return cls(str(value))
        except ValueError:
            return cls.UNKNOWN


# A migration in one of these has ended and will not move again by itself.
END_STATES = frozenset(
    {MigrationStatus.COMPLETED, MigrationStatus.FAILED, MigrationStatus.CANCELLED}
)


@dataclass(frozen=True)
class MigrationInfo:
    """The answer of query-migrate, typed; `raw` keeps every field QEMU gave."""

    status: MigrationStatus
    error_desc: str | None = None
    total_time_ms: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, info: dict[str, Any]) -> MigrationInfo:
        """Read a query-migrate answer (a dict as QMP returns it)."""
        total = info.get("total-time")
        return cls(
            status=MigrationStatus.parse(info.get("status", "none")),
            error_desc=str(info["error-desc"]) if "error-desc" in info else None,
            total_time_ms=int(total) if total is not None else None,
            raw=dict(info),
        )

    @property
    def why(self) -> str:
        """Why QEMU says the migration ended as it did: its error, else its status."""
        return self.error_desc or self.status.value


def migration_event_status(event: dict[str, Any]) -> MigrationStatus:
    """The status a MIGRATION event announces."""
    return MigrationStatus.parse(event.get("data", {}).get("status"))


def qemu_version(text: str) -> tuple[int, int] | None:
    """(major, minor) from `qemu-system-x86_64 --version` output or a bare "10.0.2"."""
    found = re.search(r"(?:version )?(\d+)\.(\d+)", text)
    return (int(found[1]), int(found[2])) if found else None


def probe_qemu_version(what: str, binary: str) -> str:
    """`binary --version`'s first line; UsageError when it is not an executable QEMU."""
    found = shutil.which(binary)
    if found is None:
        raise UsageError(
            f"{what} {binary}: no such executable (give the path of qemu-system-x86_64)"
        )
    try:
        out = subprocess.run(
            [found, "--version"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"{what} {binary}: does not run ({exc})") from exc
    first = out.strip().splitlines()[0] if out.strip() else ""
    if not first.startswith("QEMU emulator version") or qemu_version(first) is None:
        raise UsageError(
            f"{what} {binary}: not a QEMU system emulator (--version printed {first[:60]!r})"
        )
    return first


def reconnect_option(ms: int, version: tuple[int, int] | None) -> str:
    """The chardev option that makes QEMU, a vhost-user client, connect again `ms` ms after
    its server went away (and every `ms` ms until one attempt succeeds): `reconnect-ms=` on
    QEMU 9.2 or later, or on a version not known (10.2 has only that one); `reconnect=` on
    an older QEMU, in whole seconds rounded up, so never below 1 s there."""
    if ms <= 0:
        raise ValueError(f"reconnect delay must be positive, not {ms} ms")
    if version is None or version >= RECONNECT_MS_QEMU:
        return f"reconnect-ms={ms}"
    return f"reconnect={-(-ms // 1000)}"


def msix_vectors(queues: int, accel: str, version: tuple[int, int] | None) -> int:
    """MSI-X vectors for the NIC as DTS gives them (2 per queue pair + 2); 0 (INTx) where
    this QEMU crashes with MSI-X under TCG."""
    if accel == "kvm" or (version is not None and version >= MSIX_TCG_QEMU):
        return 2 * queues + 2
    return 0


@dataclass(frozen=True)
class VmSpec:
    """Everything that shapes one QEMU instance; source and destination differ only in a few."""

    name: str
    kernel: Path | None  # None with a boot disk: the disk's bootloader finds its kernel
    initrd: Path | None
    vhost_socket: Path
    qmp_socket: Path
    console_socket: Path
    accel: str = "tcg"
    cpu: str = "max"
    mem_mb: int = 1024
    smp: int = 2
    mem_path: Path | None = None  # hugetlbfs directory, as in the seed; None: memfd
    mac: str = GUEST_MAC
    queues: int = 1
    vectors: int = 0  # MSI-X vectors of the NIC; 0: INTx
    packed: bool = False
    incoming: str | None = None
    # `-incoming defer`: listen on `incoming` only at `migrate-incoming`, once the
    # capabilities that must precede it (multifd, since QEMU 8) are set
    defer_incoming: bool = False
    # `-S`: the incoming guest stays paused after the migration until `cont` (--verify-ram)
    hold: bool = False
    vhost_server: bool = False  # QEMU listens on the vhost-user socket (--vhost-mode client)
    # QEMU as the vhost-user client connects again this long after the backend's socket
    # closed, and retries as often, until one attempt succeeds (0: never: a backend gone
    # stays gone). Only with vhost_server off: a listening socket takes no reconnect (QEMU
    # 10.2 refuses it there, older ones ignore it). With it QEMU also waits at its start,
    # retrying, until the backend's socket answers, instead of failing at once.
    reconnect_ms: int = 0
    # this QEMU's (major, minor), for the options whose names changed (reconnect_option);
    # None: not known, the current names
    qemu_version: tuple[int, int] | None = None
    disk: Path | None = None  # a shared disk image (the seed's NFS one), attached read-only
    # the guest's own disk (an overlay of the user's image), booted through its bootloader;
    # source and destination open the same file, the destination inactive until switch-over
    boot_disk: Path | None = None
    # vhostlm's own guest programs for a user's image (guests.tools): a read-only tar drive
    tools_disk: Path | None = None
    # a second serial port (the guest's ttyS1) for the memory checker's reports, apart
    # from the console so that its lines never mix with testpmd's or the shell's
    check_socket: Path | None = None
    # no hugepages= here: the guest reserves its testpmd's at run time, in a PMD case only
    append: str = "console=ttyS0 init_on_alloc=0 panic=-1 quiet"
    binary: str = QEMU_BINARY

    def __post_init__(self) -> None:
        if self.reconnect_ms and self.vhost_server:
            raise ValueError(
                f"{self.name}: reconnect_ms is for QEMU as the vhost-user client; with "
                "vhost_server QEMU listens and the backend reconnects"
            )

    def vhost_chardev(self) -> str:
        """The vhost-user socket's -chardev: QEMU listening (`server=on`, the backend
        connects), else connecting to the backend's socket, with `reconnect_ms` when it
        must connect again by itself after the backend went away."""
        chardev = f"socket,id=char0,path={self.vhost_socket}"
        if self.vhost_server:
            return chardev + ",server=on,wait=off"
        if self.reconnect_ms:
            return chardev + "," + reconnect_option(self.reconnect_ms, self.qemu_version)
        return chardev


def qemu_argv(spec: VmSpec) -> list[str]:
    """A QEMU command line mirroring the seed's, with unix sockets instead of telnet ports."""
    if spec.mem_path is not None:
        backend = (
            f"memory-backend-file,id=mem,size={spec.mem_mb}M,mem-path={spec.mem_path},share=on"
        )
    else:
        backend = f"memory-backend-memfd,id=mem,size={spec.mem_mb}M,share=on"
    netdev = f"type=vhost-user,id=netdev0,chardev=char0,vhostforce=on,queues={spec.queues}"
    device = f"virtio-net-pci,netdev=netdev0,mac={spec.mac},vectors={spec.vectors}"
    if spec.queues > 1:
        device += ",mq=on"
    if spec.packed:
        device += ",packed=on"
    argv = [
        spec.binary,
        "-name", spec.name,
        "-machine", "pc",
        "-accel", spec.accel,
        "-cpu", spec.cpu,
        "-m", f"{spec.mem_mb}M",
        "-smp", str(spec.smp),
        "-object", backend,
        "-numa", "node,memdev=mem",
        *(["-kernel", str(spec.kernel), "-initrd", str(spec.initrd), "-append", spec.append]
          if spec.kernel is not None and spec.initrd is not None else []),
        "-chardev", spec.vhost_chardev(),
        "-netdev", netdev,
        "-device", device,
        "-chardev", f"socket,id=ser0,path={spec.console_socket},server=on,wait=off",
        "-serial", "chardev:ser0",
        *(["-chardev", f"socket,id=ser1,path={spec.check_socket},server=on,wait=off",
            "-serial", "chardev:ser1"] if spec.check_socket is not None else []),
        "-qmp", f"unix:{spec.qmp_socket},server=on,wait=off",
        "-display", "none",
        "-nodefaults",
        "-no-user-config",
    ]  # fmt: skip
    if spec.boot_disk is not None:
        argv += ["-drive", f"file={spec.boot_disk},if=none,id=boot0,format=qcow2",
                 "-device", "virtio-blk-pci,drive=boot0,bootindex=1"]  # fmt: skip
    if spec.tools_disk is not None:
        argv += ["-drive", f"file={spec.tools_disk},if=none,id=tools0,format=raw,readonly=on",
                 "-device", f"virtio-blk-pci,drive=tools0,serial={TOOLS_SERIAL}"]  # fmt: skip
    if spec.disk is not None:
        # read-only: source and destination open the same file on shared storage at once
        argv += ["-drive", f"file={spec.disk},if=none,id=disk0,format=raw,readonly=on",
                 "-device", "virtio-blk-pci,drive=disk0"]  # fmt: skip
    if spec.incoming:
        argv += ["-incoming", "defer" if spec.defer_incoming else spec.incoming]
        if spec.hold:
            argv.append("-S")
    return argv


class QemuVm:
    """One QEMU process with its QMP connection and serial console."""

    def __init__(self, spec: VmSpec, rundir: RunDir, node: Node) -> None:
        self.spec = spec
        self.rundir = rundir
        self.node = node
        self.process = node.process(f"qemu-{spec.name}", qemu_argv(spec), rundir)
        self.console = Console(
            f"console-{spec.name}", spec.console_socket, rundir.log_path(f"console-{spec.name}")
        )
        self.checker: Console | None = None  # the memory checker's channel (ttyS1)
        if spec.check_socket is not None:
            self.checker = Console(
                f"memcheck-{spec.name}", spec.check_socket, rundir.log_path(f"memcheck-{spec.name}")
            )
        self._qmp: QEMUMonitorProtocol | None = None
        self.events: list[dict[str, Any]] = []

    def start(self, timeout: float = 20.0) -> QemuVm:
        """Start QEMU, connect QMP and the console; SetupError with QEMU's words on failure."""
        if self.node.which(self.spec.binary) is None:
            raise SetupError(
                f"{self.spec.binary} not found on {self.node.label}: "
                "apt-get install qemu-system-x86, or set the node's qemu path"
            )
        self.process.start()
        try:
            for path in (self.spec.console_socket, self.spec.qmp_socket):
                self.node.wait_socket(str(path), timeout, alive=self.process.alive)
            self.console.path = self.node.reach(str(self.spec.console_socket))
            self.console.connect(timeout)
            if self.checker is not None and self.spec.check_socket is not None:
                self.node.wait_socket(
                    str(self.spec.check_socket), timeout, alive=self.process.alive
                )
                self.checker.path = self.node.reach(str(self.spec.check_socket))
                self.checker.connect(timeout)
            qmp_path = self.node.reach(str(self.spec.qmp_socket))

            def connect() -> QEMUMonitorProtocol:
                # the socket file exists from QEMU's bind(); a busy machine can still be
                # between that and its listen(): refused then, so try again
                qmp = QEMUMonitorProtocol(str(qmp_path), nickname=self.spec.name)
                qmp.settimeout(timeout)
                try:
                    qmp.connect(negotiate=True)
                except Exception as exc:
                    qmp.close()
                    if isinstance(exc.__cause__ or exc.__context__, ConnectionRefusedError):
                        raise ConnectionRefusedError(str(exc)) from exc
                    raise
                return qmp

            self._qmp = wait_until(
                connect, timeout, what=f"QMP of {self.spec.name}", retry=(ConnectionRefusedError,)
            )
        except Exception as exc:
            self.process.wait(1)
            text = self.process.output.text().strip().splitlines()
            why = f"{exc}; QEMU said: {text[-1]}" if text else str(exc)
            raise SetupError(f"QEMU {self.spec.name} did not start: {why}") from exc
        return self

    def qmp(self, command: str, timeout: float = 10.0, **args: Any) -> Any:
        """Run a QMP command with a timeout (a vhost-user backend can block QEMU's main loop)."""
        if self._qmp is None:
            raise SetupError(f"QEMU {self.spec.name}: QMP not connected")
        self._qmp.settimeout(timeout)
        try:
            return self._qmp.cmd(command, **args)
        except ExecuteError as exc:
            raise SetupError(f"QMP {command} on {self.spec.name}: {exc.error.error.desc}") from exc
        except TimeoutError as exc:
            if not self.process.alive():
                raise QemuGone(
                    f"QMP {command} on {self.spec.name}: QEMU exited ({self.process.returncode})"
                ) from exc
            raise QmpTimeout(
                f"QMP {command} on {self.spec.name}: no answer in {timeout:.0f} s"
            ) from exc

    def pull_events(self, wait: float = 0.0) -> list[dict[str, Any]]:
        """Collect QMP events that arrived (waiting up to `wait` s for one); keep them all."""
        assert self._qmp is not None
        try:
            got = self._qmp.get_events(wait=float(wait) if wait else False)
        except TimeoutError:
            got = []
        self.events += got
        return got

    def event_mark(self) -> int:
        """Index of the next event to arrive; pass as `since` to wait_event."""
        self.pull_events()
        return len(self.events)

    def wait_event(
        self,
        name: str,
        timeout: float,
        since: int = 0,
        match: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """Wait for QMP event `name` (after index `since`) whose data satisfies `match`."""
        deadline = Deadline(timeout)
        seen = since
        while True:
            for event in self.events[seen:]:
                if event.get("event") == name and (match is None or match(event.get("data", {}))):
                    return event
            seen = len(self.events)
            left = deadline.left()
            if left <= 0:
                raise QmpTimeout(f"QEMU {self.spec.name}: no {name} event in {timeout:.0f} s")
            if not self.process.alive():
                raise QemuGone(f"QEMU {self.spec.name} exited ({self.process.returncode})")
            self.pull_events(min(left, 1.0))

    def migration(self) -> MigrationInfo:
        """query-migrate, typed."""
        return MigrationInfo.parse(self.qmp("query-migrate"))

    def wait_migration(
        self, since: int, states: frozenset[MigrationStatus] | set[MigrationStatus], timeout: float
    ) -> tuple[MigrationStatus, dict[str, Any]]:
        """The first MIGRATION event after index `since` whose status is in `states`."""

        def wanted(data: dict[str, Any]) -> bool:
            return MigrationStatus.parse(data.get("status")) in states

        event = self.wait_event("MIGRATION", timeout, since, match=wanted)
        return migration_event_status(event), event

    def stop(self) -> None:
        """Quit QEMU (QMP quit, then signals) and close the connections."""
        if self._qmp is not None:
            try:
                if self.process.alive():
                    self.qmp("quit", timeout=3)
            except Exception:  # noqa: BLE001 - QEMU may already be gone
                pass
            with contextlib.suppress(Exception):
                self._qmp.close()
            self._qmp = None
        self.process.wait(5)
        self.process.stop()
        self.console.close()
        if self.checker is not None:
            self.checker.close()
