"""The options of `vhostlm run`, each declared once: flag, field, type, default, help, checks.

Every option is one dataclass field whose metadata holds its command-line form (`option`):
`RunOptions` (the knobs the cases read) and `RunTarget` (what to run, where to write). The
argparse grammar (`add_run_arguments`), the objects built back from the parsed namespace
(`from_namespace`) and the checks argparse cannot make (`validate`) are all derived here.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from vhostlm.addresses import GUEST_MAC, PROBE_PPS, SEED_PPS, TESTER_MAX_PPS
from vhostlm.backends.registry import BACKENDS, DEFAULT_BACKEND
from vhostlm.errors import UsageError
from vhostlm.guests.contract import (
    DISK_BASE_MB,
    GUEST_BASE_MB,
    guest_hugepages,
    memcheck_room_mb,
)
from vhostlm.paths import check_file_target, check_output_dir

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from vhostlm.plans.spec import CaseSpec

MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


# --- value parsers: argparse `type`s whose errors name the value ------------------------
def positive(kind: type[int] | type[float]) -> Callable[[str], float | int]:
    """argparse type: a number > 0."""

    def convert(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
        return value

    return convert


def count(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def path(text: str) -> Path:
    """argparse type: a path, not empty (Path("") would silently mean the current dir)."""
    if not text:
        raise argparse.ArgumentTypeError("empty path")
    return Path(text)


def mac(text: str) -> str:
    """argparse type: a MAC address, lower-cased."""
    if not MAC_RE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a MAC address like {GUEST_MAC}")
    return text.lower()


# --- checks of parsed values: check(flag, value), UsageError naming the fix -------------
def check_probe_size(flag: str, value: int) -> None:
    """A probe must hold its headers, sequence number and a payload word, within the MTU."""
    from vhostlm.measure.payload import check_probe_size as check

    check(value)


def check_rate(flag: str, value: float) -> None:
    """A rate the tester can send: at most TESTER_MAX_PPS (measured: see addresses.py).

    A higher one used to start the lab and the guest, then time out waiting for the
    tester's first progress line (or run with a stream far below the rate asked)."""
    if value > TESTER_MAX_PPS:
        raise UsageError(
            f"{flag} {value:g} is above the highest rate the tester supports, "
            f"{TESTER_MAX_PPS:g} probes/s (its send loop, as measured): use at most "
            f"{TESTER_MAX_PPS:g}"
        )


def check_qemu(flag: str, value: str) -> None:
    """An executable QEMU system emulator: it runs and says `QEMU emulator version`."""
    from vhostlm.apps.qemu import probe_qemu_version

    probe_qemu_version(flag, value)


def check_guest_image(flag: str, value: Path) -> None:
    """A raw or qcow2 disk image qemu-img can read (guests/disk.py says why not)."""
    from vhostlm.guests.disk import image_format

    image_format(value)


def guest_password_file(image: Path, given: Path | None) -> Path:
    """The file holding the guest login's password: --guest-password-file, else the one
    `vhostlm image disk` keeps beside the image (<image>.password)."""
    return given if given is not None else image.with_name(image.name + ".password")


# --- the declaration --------------------------------------------------------------------
@dataclass(frozen=True)
class Flag:
    """How one field is given on the command line; argparse's dest is the field's name."""

    flag: str  # "--pps", "-k"
    help: str | None = None
    parse: Callable[[str], Any] | None = None  # argparse type: converts and validates
    metavar: str | None = None  # None: the flag in capitals (argparse's own choice)
    choices: tuple[str, ...] | None = None
    action: str = "store"  # store | append | store_true | store_false (the flag turns it off)
    check: Callable[[str, Any], None] | None = None  # check(flag, value) once parsed, if set
    needs: str | None = None  # a boolean field that must be true when this option is set
    before: str | None = None  # RunTarget only: listed before this RunOptions flag; None: last


def option(default: Any, flag: str, **how: Any) -> Any:
    """A dataclass field with `default` and its command-line form (`Flag` keywords)."""
    return field(default=default, metadata={"flag": Flag(flag, **how)})


def flag_of(f: Field[Any]) -> Flag | None:
    """The command-line form of a dataclass field, or None for a field with no flag."""
    found = f.metadata.get("flag")
    return found if isinstance(found, Flag) else None


@dataclass(frozen=True)
class RunOptions:
    """Knobs of a run that the cases read; defaults follow the seed plan."""

    pps: float | None = option(
        None, "--pps", parse=positive(float), check=check_rate,
        help=f"tester rate (default {PROBE_PPS:g} probes/s; {SEED_PPS:g}/s with --seed-traffic;"
        f" at most {TESTER_MAX_PPS:g})",
    )  # fmt: skip  # None: PROBE_PPS with probes, SEED_PPS without
    probes: bool = option(
        True, "--seed-traffic", action="store_false",
        help="the seed's exact form: UDP frames, guest testpmd rxonly with verbose 1; no probes",
    )  # fmt: skip
    max_outage_ms: float | None = option(
        None, "--max-outage-ms", parse=positive(float), metavar="MS", needs="probes",
        help="fail a case whose measured outage is longer",
    )  # fmt: skip
    max_loss: int | None = option(
        None, "--max-loss", parse=count, metavar="N", needs="probes",
        help="fail a case that loses more probes",
    )  # fmt: skip
    round_trips: int | None = option(
        None, "--round-trips", parse=count, metavar="N",
        help="migrate there and back N times (ping-pong); each leg is measured",
    )  # fmt: skip  # None: the case's own
    downtime_limit_ms: int | None = option(
        None, "--downtime-limit", parse=count, metavar="MS",
        help="QEMU's downtime-limit for every migration",
    )  # fmt: skip
    max_bandwidth_mbps: float | None = option(
        None, "--max-bandwidth", parse=positive(float), metavar="MBIT/S",
        help="QEMU's max-bandwidth for every migration, in Mbit/s",
    )  # fmt: skip
    converge_timeout_s: float = option(
        20.0, "--converge-timeout", parse=positive(float), metavar="S",
        help="how long a non-converging migration runs before it is cancelled",
    )  # fmt: skip
    guest_memory: str = option(
        "hugetlbfs", "--guest-memory", choices=("hugetlbfs", "memfd"),
        help="guest RAM shared with vhost: a hugetlbfs file (the seed's) or memfd",
    )  # fmt: skip
    guest_smp: int | None = option(
        None, "--guest-smp", parse=positive(int), metavar="N", help="guest vCPUs"
    )  # None: the case's own (smp)
    dst_mac: str = option(
        GUEST_MAC, "--dst-mac", parse=mac,
        help="destination MAC of the tester's frames (default: the guest's)",
    )  # fmt: skip
    guest_mem_mb: int = option(1024, "--guest-mem", parse=positive(int), metavar="MB")
    migration_timeout_s: float = option(
        120.0, "--migration-timeout", parse=positive(float), metavar="S",
        help="fail a migration not completed S seconds after `migrate` (it is cancelled and "
        "the guest stays on the source)",
    )  # fmt: skip
    migration_tls: bool = option(
        False, "--migration-tls", action="store_true",
        help="encrypt the migration stream (QEMU tls-creds-x509, certificates made for the run)",
    )  # fmt: skip
    backup_backend: bool = option(
        True, "--no-backup-backend", action="store_false",
        help="start no vhost testpmd on the backup (the case must fail)",
    )  # fmt: skip
    switch_learning: bool = option(
        False, "--switch-learning", action="store_true",
        help="make the lab switch learn MACs: the guest is reached on the backup only once "
        "it is announced there (default: flood, like the seed's switch)",
    )  # fmt: skip
    cpu: str = option(
        "", "--cpu", help="guest CPU model (default: host under KVM, Nehalem under TCG)"
    )  # "" = host under KVM, TCG_CPU under TCG
    backend: str = option(
        DEFAULT_BACKEND, "--backend", choices=tuple(BACKENDS),
        help="the vhost-user backend on host and backup: testpmd (the seed's) or ovs-dpdk "
        "(a private Open vSwitch with DPDK per node and case: a learning userspace bridge); "
        "a case the backend cannot run is a skip",
    )  # fmt: skip  # a case's own spec.backend, when it pins one, wins
    vhost_mode: str = option(
        "server", "--vhost-mode", choices=("server", "client"),
        help="the vhost backend's side of the vhost-user socket: server (it listens, the "
        "seed's) or client (QEMU listens with server=on; the backend connects, and "
        "reconnects: testpmd's client=1)",
    )  # fmt: skip
    probe_size: int = option(
        256, "--probe-size", parse=positive(int), metavar="BYTES", check=check_probe_size,
        help="frame size of every probe; its payload is derived from its sequence number and "
        "checked in every reply (default 256: more than one cache line; up to the MTU)",
    )  # fmt: skip
    memcheck_mb: int | None = option(
        None, "--memcheck-mb", parse=count, metavar="MB",
        help="guest RAM the in-guest memory checker owns, dirties and verifies after every "
        "switch-over (default: a quarter of --guest-mem; 0: off)",
    )  # fmt: skip  # None: guest_mem_mb // 4
    verify_ram: bool = option(
        False, "--verify-ram", action="store_true",
        help="hold the destination paused at each switch-over and compare every page of guest "
        "RAM with the source's before it runs: pages the migration missed are found before "
        "the guest can touch them (the comparison's time adds to the outage; not postcopy)",
    )  # fmt: skip
    qemu: str | None = option(
        None, "--qemu", metavar="PATH", check=check_qemu,
        help="the QEMU binary both QEMUs of every case run (default: qemu-system-x86_64 on "
        "PATH; on a testbed, each node's qemu:)",
    )  # fmt: skip
    guest_image: Path | None = option(
        None, "--guest-image", parse=path, metavar="FILE", check=check_guest_image,
        help="boot this raw or qcow2 disk image (through its own bootloader) instead of "
        "vhostlm's initramfs; it is never written: each case boots an overlay of it",
    )  # fmt: skip
    guest_user: str = option(
        "root", "--guest-user", metavar="NAME",
        help="the login on the guest image's serial console (default root)",
    )  # fmt: skip
    guest_password_file: Path | None = option(
        None, "--guest-password-file", parse=path, metavar="FILE",
        help="the file holding that login's password (default: FILE.password beside the "
        "image, as `vhostlm image disk` writes it)",
    )  # fmt: skip
    boot_timeout_s: float = option(
        90.0, "--boot-timeout", parse=positive(float), metavar="S",
        help="fail a guest that has no shell (or login prompt) S seconds after QEMU started "
        "(default 90)",
    )  # fmt: skip
    # not on the command line
    after_packets: int = 10
    warmup_s: float = 1.0  # answered probes before migrating, in seconds of traffic
    after_timeout_s: float = 30.0

    @property
    def memcheck_region_mb(self) -> int:
        """MiB of guest RAM the memory checker owns (0: no checker): by default a quarter
        of the guest's RAM, less where a PMD case's hugepages and the guest's own needs
        leave too little."""
        if self.memcheck_mb is not None:
            return self.memcheck_mb
        room = memcheck_room_mb(self.guest_mem_mb, self.guest_base_mb, self.pmd_hugepages)
        return max(0, min(self.guest_mem_mb // 4, room))

    @property
    def guest_base_mb(self) -> int:
        """What the guest needs of its RAM besides hugepages: more for a distro image."""
        return DISK_BASE_MB if self.guest_image is not None else GUEST_BASE_MB

    @property
    def pmd_hugepages(self) -> int:
        """2 MiB hugepages this run's guest reserves in a virtio-pmd case (none in a
        kernel-driver one): what the checker's room leaves out, whatever the case."""
        return guest_hugepages(pmd=True, disk=self.guest_image is not None)

    @property
    def rate(self) -> float:
        """The tester's packets per second."""
        return self.pps or (PROBE_PPS if self.probes else SEED_PPS)


@dataclass(frozen=True)
class RunTarget:
    """What `vhostlm run` runs and where it writes: the options that are not the cases' knobs."""

    plan: str = option(
        "seed", "--plan", before="--pps",
        help="seed (default), dts (DPDK's 8 cases), variants, reconnect, detect, or all",
    )  # fmt: skip  # choices: the plan names, given to add_run_arguments
    cases: tuple[str, ...] = option(
        (), "--case", action="append", metavar="NAME", before="--pps",
        help="run only this case (repeatable); see `vhostlm list`",
    )  # fmt: skip
    output: Path | None = option(
        None, "--output", parse=path, check=check_output_dir, before="--pps",
        help="run directory (default ./results/<time>/)",
    )  # fmt: skip
    junit: Path | None = option(
        None, "--junit", parse=path, metavar="FILE", check=check_file_target,
        before="--round-trips", help="also write JUnit XML here",
    )  # fmt: skip
    keyword: str | None = option(
        None, "-k", metavar="EXPR", before="--round-trips",
        help="only cases whose names match (words, and, or, not), as pytest -k",
    )  # fmt: skip
    testbed: Path | None = option(
        None, "--testbed", parse=Path, metavar="FILE",
        help="run on the servers of this testbed file (over SSH) instead of the embedded lab",
    )  # fmt: skip


# --- what is derived from it ------------------------------------------------------------
def flags_of(cls: type[DataclassInstance]) -> list[tuple[Field[Any], Flag]]:
    """The fields of `cls` that have a flag, in declaration order."""
    return [(f, found) for f in fields(cls) if (found := flag_of(f)) is not None]


def run_flags() -> list[tuple[Field[Any], Flag]]:
    """Every option of `vhostlm run` in --help order: RunOptions' own, with each RunTarget
    option placed before the flag it names (or last)."""
    targets = flags_of(RunTarget)
    ordered: list[tuple[Field[Any], Flag]] = []
    for pair in flags_of(RunOptions):
        ordered += [t for t in targets if t[1].before == pair[1].flag]
        ordered.append(pair)
    ordered += [t for t in targets if t[1].before is None]
    if len(ordered) != len(targets) + len(flags_of(RunOptions)):
        raise AssertionError("a RunTarget option is placed before a flag that does not exist")
    return ordered


def add_run_arguments(
    parser: argparse.ArgumentParser, choices: Mapping[str, Sequence[str]] | None = None
) -> None:
    """Add every option of `vhostlm run` to `parser`; `choices` gives the allowed values
    of fields declared elsewhere (the plan names, field name -> values)."""
    extra = choices or {}
    for f, how in run_flags():
        kwargs: dict[str, Any] = {"dest": f.name, "action": how.action, "help": how.help}
        default: Any = f.default
        kwargs["default"] = list(default) if how.action == "append" else default
        if how.action in ("store", "append"):
            allowed = how.choices or extra.get(f.name)
            if allowed is not None:
                kwargs["choices"] = list(allowed)
            else:
                kwargs["metavar"] = how.metavar or how.flag.lstrip("-").upper().replace("-", "_")
            if how.parse is not None:
                kwargs["type"] = how.parse
        parser.add_argument(how.flag, **kwargs)


T = TypeVar("T", bound="DataclassInstance")


def from_namespace(cls: type[T], args: argparse.Namespace) -> T:
    """`cls` (RunOptions or RunTarget) from parsed arguments: each field from its own dest."""
    values = {f.name: getattr(args, f.name) for f, _ in flags_of(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def flag_for(name: str) -> str:
    """The flag of the RunOptions or RunTarget field `name` (for messages)."""
    for f, how in (*flags_of(RunOptions), *flags_of(RunTarget)):
        if f.name == name:
            return how.flag
    raise KeyError(name)


def guest_mem_needed(case: CaseSpec, options: RunOptions) -> tuple[int, str]:
    """The least --guest-mem `case` can run with, MiB, and what it is made of (for the
    message): the guest's own needs, its testpmd's hugepages in a virtio-pmd case, the
    memory checker's region, and the dirtying load's two tmpfs files."""
    from vhostlm.guests.base import Driver

    pages = guest_hugepages(case.driver is Driver.PMD, disk=options.guest_image is not None)
    parts = [(options.guest_base_mb, "for the guest's kernel and programs")]
    parts.append((2 * pages, "of hugepages for its testpmd"))
    parts.append((case.memcheck_mb(options.memcheck_region_mb), "for the memory checker"))
    parts.append((2 * case.dirty_mb_s, "for its dirtying load"))
    shown = [f"{mb} MiB {what}" for mb, what in parts if mb]
    return sum(mb for mb, _ in parts), ", ".join(shown)


def check_guest_mem(options: RunOptions, cases: Sequence[CaseSpec]) -> None:
    """Refuse a --guest-mem too small for a selected case (UsageError naming the least it
    takes), before anything starts: such a guest panicked at boot ("System is deadlocked
    on memory") or lost its testpmd to the OOM killer."""
    for case in cases:
        need, why = guest_mem_needed(case, options)
        if options.guest_mem_mb < need:
            raise UsageError(
                f"--guest-mem {options.guest_mem_mb} is too small for {case.name}: it needs "
                f"at least {need} MiB ({why}); give --guest-mem {need} or more"
            )


def validate(target: RunTarget, options: RunOptions, cases: Sequence[CaseSpec] = ()) -> None:
    """The checks argparse cannot make: options that need another (the probe limits need
    probes), --guest-mem against what each of `cases` needs, then each field's own
    `check` (--output, --junit writable); UsageError."""
    for needed in dict.fromkeys(h.needs for _, h in flags_of(RunOptions) if h.needs):
        users = [(f, h) for f, h in flags_of(RunOptions) if h.needs == needed]
        given = any(getattr(options, f.name) is not None for f, _ in users)
        if given and not getattr(options, needed):
            names = " and ".join(h.flag for _, h in users)
            raise UsageError(f"{names} need {needed}: drop {flag_for(needed)}")
    room = memcheck_room_mb(options.guest_mem_mb, options.guest_base_mb, options.pmd_hugepages)
    if options.memcheck_mb and options.memcheck_mb > room:
        raise UsageError(
            f"--memcheck-mb {options.memcheck_mb} does not fit in the guest's "
            f"{options.guest_mem_mb} MiB (--guest-mem): at most {max(room, 0)}, after its "
            f"{2 * options.pmd_hugepages} MiB of hugepages and {options.guest_base_mb} MiB "
            "for its kernel and programs; give less, or 0 to turn it off"
        )
    check_guest_mem(options, cases)
    if options.guest_image is None and options.guest_password_file is not None:
        raise UsageError("--guest-password-file needs --guest-image: give the image too")
    for obj in (options, target):
        for f, how in flags_of(type(obj)):
            value = getattr(obj, f.name)
            if how.check is not None and value is not None:
                how.check(how.flag, value)
    if options.guest_image is not None:
        secret = guest_password_file(options.guest_image, options.guest_password_file)
        if not secret.is_file():
            raise UsageError(
                f"--guest-image {options.guest_image}: no password file {secret}: give "
                "--guest-password-file FILE with the password of --guest-user"
            )
