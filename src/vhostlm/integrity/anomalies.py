"""Known signs of lost state in what the backends, the QEMUs and the guests printed.

A migration can "pass" on traffic while a program says, in its own words, that state was
lost: DPDK's vhost library resynchronising a ring it found inconsistent, QEMU giving up
on restoring a ring from the backend, the guest kernel finding a used id that is not a
head. After each case the flow scans every program's time-stamped lines with `scan_logs`,
reports what matched under `integrity.anomalies`, and fails the case on a `fatal` one.

The texts below are the programs' own format strings, read in their sources: DPDK v22.11
(lib/vhost/vhost_user.c, vhost.c, socket.c, drivers/net/vhost/rte_eth_vhost.c,
drivers/net/virtio/virtio_rxtx.c), QEMU 10.0 (hw/virtio/vhost.c, vhost-user.c,
virtio.c, net/vhost-user.c, migration/savevm.c, confirmed with `strings` on Debian's
qemu-system-x86_64 10.0.2) and Linux 6.1 (lib/bug.c, arch/x86/kernel/dumpstack.c,
drivers/virtio/virtio_ring.c, kernel/rcu/tree_stall.h, net/sched/sch_generic.c).
DPDK 22.11 prefixes every vhost line with "VHOST_CONFIG: (<socket path>) " (data path:
"VHOST_DATA: (<socket path>) "); QEMU prefixes error_report() with its program name
("qemu-system-x86_64: "); the guest kernel's lines may carry a "[   12.345678] " stamp
and may follow a shell or testpmd prompt on the serial console.

Severity: `fatal` means lost or inconsistent state, so the case fails; `warning` is
reported and does not fail. Lines in BENIGN are never reported: every normal run prints
them. Lines after `until` (the case's last check: teardown follows) are not scanned.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

FATAL = "fatal"
WARNING = "warning"
KINDS = frozenset({"backend", "qemu", "guest"})
MAX_ANOMALIES = 50  # scan_logs keeps this many (fatal ones first), so a flood stays small
TRACE_WINDOW = 60  # lines after a guest report header within which a "Call Trace:" is its own

BACKEND = frozenset({"backend"})
QEMU = frozenset({"qemu"})
GUEST = frozenset({"guest"})

# The start of a guest kernel line: line start, after a printk time stamp "[  1.2] ", or
# after a prompt ("/ # ", "testpmd> ") the console line was printed behind, or after the
# soft-lockup detector's "watchdog: ". Not after other ": ", so DPDK's "EAL: WARNING: ..."
# in the guest's testpmd is not a kernel WARNING.
_K = r"(?:^|[\]#>]\s*|watchdog: )"
# QEMU's error_report() prefix: its program name (optionally a path and -msg timestamp).
_QEMU = r"(?:^|\s)(?:\S*/)?qemu-(?:system-[\w-]+|kvm|x86_64):\s"


@dataclass(frozen=True)
class Pattern:
    """One known sign: where it applies, how bad it is, and why."""

    name: str
    kinds: frozenset[str]
    severity: str
    regex: re.Pattern[str]
    reason: str
    # a guest kernel report header: a "Call Trace:" that follows it belongs to it
    header: bool = False


@dataclass(frozen=True)
class Benign:
    """A line every normal run prints that would otherwise look like a sign."""

    name: str
    kinds: frozenset[str]
    regex: re.Pattern[str]
    why: str


@dataclass(frozen=True)
class Anomaly:
    """One matched line: which program printed it, when (epoch s), and what it means."""

    program: str
    at: float
    line: str
    pattern: str
    severity: str
    reason: str


def _p(
    name: str, kinds: frozenset[str], severity: str, regex: str, reason: str, header: bool = False
) -> Pattern:
    return Pattern(name, kinds, severity, re.compile(regex), reason, header)


def _b(name: str, kinds: frozenset[str], regex: str, why: str) -> Benign:
    return Benign(name, kinds, re.compile(regex), why)


# First match wins: specific patterns come before the generic catch-alls of each program.
PATTERNS: tuple[Pattern, ...] = (
    # -- DPDK vhost library (lib/vhost), the vhost PMD, testpmd ---------------------------
    _p(
        "vhost_ring_mismatch",
        BACKEND,
        FATAL,
        r"VHOST_CONFIG: .*last_used_idx \(\d+\) and vq->used->idx \(\d+\) mismatches",
        "the ring state was lost: the used index in guest memory disagrees with the base "
        "the backend was given (vhost_user.c translate_ring_addresses)",
    ),
    _p(
        "vhost_packets_resent",
        BACKEND,
        FATAL,
        r"VHOST_CONFIG: .*some packets maybe resent for Tx and dropped for Rx",
        "the ring state was lost (some packets maybe resent): vhost reset its ring indexes "
        "to the guest's used index",
    ),
    _p(
        "vhost_dirty_log",
        BACKEND,
        FATAL,
        r"VHOST_(?:CONFIG|DATA): .*(?:failed to write log for IOVA|failed to find GPA for "
        r"log_addr|mmap log base failed|invalid log fd|invalid log base msg size|log offset "
        r".* overflow|failed to allocate VQ logging cache)",
        "dirty-page logging failed: guest memory the backend wrote may not have been sent "
        "to the destination",
    ),
    _p(
        "vhost_inflight",
        BACKEND,
        FATAL,
        r"VHOST_CONFIG: .*(?:failed to inflights for vq|inflight (?:buffer|area)|"
        r"set_inflight_fd message size|get_inflight_fd message size|Inflight packets must be "
        r"completed|inflight packets must be completed)",
        "the backend could not keep its in-flight descriptors: requests in the rings may "
        "be lost or resubmitted twice",
    ),
    _p(
        "vhost_state_message_failed",
        BACKEND,
        FATAL,
        r"VHOST_CONFIG: .*processing VHOST_USER_(?:SET_LOG_BASE|SET_LOG_FD|GET_VRING_BASE|"
        r"SET_VRING_BASE|SET_VRING_ADDR|SET_VRING_NUM|SET_MEM_TABLE|SET_FEATURES|"
        r"SET_INFLIGHT_FD|GET_INFLIGHT_FD) failed",
        "the backend rejected a message that carries ring, memory or logging state, so "
        "that state did not reach it",
    ),
    _p(
        "vhost_message_failed",
        BACKEND,
        FATAL,
        r"VHOST_CONFIG: .*(?:vhost message handling failed|vhost message \(req: \d+\) was "
        r"not handled|processing VHOST_USER_\w+ failed|received invalid (?:negotiated|"
        r"protocol) features|features changed while device is running|invalid vring index)",
        "the backend failed a vhost-user request from QEMU: its device state and QEMU's "
        "no longer agree",
    ),
    _p(
        "vhost_memory",
        BACKEND,
        FATAL,
        r"VHOST_CONFIG: .*(?:failed to mmap region|mmap failed|adding guest pages to region "
        r"failed|too many memory regions|mmap size \(.*\) or alignment .* is invalid|"
        r"cannot realloc guest_pages|failed to map (?:desc|avail|used) ring)",
        "the backend could not map the guest's memory or rings",
    ),
    _p(
        "backend_panic",
        BACKEND,
        FATAL,
        r"\bPANIC in |\bEAL: Error - exiting with code|Segmentation fault|Illegal instruction",
        "the backend crashed or exited with an error: its vhost state is gone",
    ),
    _p(
        "vhost_data_error",
        BACKEND,
        WARNING,
        r"VHOST_DATA: .*(?:failed|invalid|Invalid)",
        "the vhost data path dropped or could not build a packet",
    ),
    _p(
        "vhost_config_error",
        BACKEND,
        WARNING,
        r"VHOST_CONFIG: .*(?:[Ff]ailed|[Ff]ail to|[Ii]nvalid|[Cc]an't|[Cc]annot|[Uu]nable|"
        r"not supported|[Uu]nexpected|truncated|error)",
        "a vhost library error that does not by itself mean lost ring state",
    ),
    _p(
        "backend_error",
        BACKEND,
        WARNING,
        r"(?:^|> )(?:Error|ERROR)\b",
        "testpmd reported an error on a port or a command",
    ),
    _p(
        "backend_failed_to",
        BACKEND,
        WARNING,
        r"\bFailed to\b|\bFail to\b",
        "the backend failed an operation (port, queue or device set-up)",
    ),
    # -- QEMU --------------------------------------------------------------------------
    _p(
        "qemu_vq_inconsistent",
        QEMU,
        FATAL,
        r"VQ \d+ (?:size 0x[0-9a-f]+ Guest index 0x[0-9a-f]+ inconsistent with Host index|"
        r"address 0x0 inconsistent with Host index)",
        "the migrated virtqueue indexes disagree with the ring in guest memory "
        "(virtio.c virtio_load)",
    ),
    _p(
        "qemu_ring_restore_failed",
        QEMU,
        FATAL,
        r"vhost VQ \d+ ring restore failed",
        "QEMU could not fetch the ring base from the backend and fell back to the guest's "
        "used index: the ring state was lost",
    ),
    _p(
        "qemu_virtqueue_error",
        QEMU,
        FATAL,
        r"Guest moved used index from \d+ to \d+|Virtqueue size exceeded|"
        r"Guest says index \d+ is available|Looped descriptor|Desc next is \d+|"
        r"Device \S+ says index \d+ is used",
        "QEMU found the guest's ring corrupt",
    ),
    _p(
        "qemu_vhost_failed",
        QEMU,
        FATAL,
        r"\bvhost(?:_\w+| VQ \d+| \d+ VQ \d+| guest notifier| vring)?\b[^\n]*?\bfail",
        "QEMU could not hand ring, memory or logging state to the vhost-user backend",
    ),
    _p(
        "qemu_vhost_user_channel",
        QEMU,
        WARNING,
        r"Failed to (?:set msg fds|read msg header|read msg payload|write msg)|"
        r"Received (?:unexpected msg type|bad msg size)|Unexpected msg type",
        "QEMU's vhost-user channel to the backend broke (the backend went away or "
        "answered out of turn)",
    ),
    _p(
        "qemu_rarp",
        QEMU,
        WARNING,
        r"Vhost user backend fails to broadcast fake RARP",
        "the backend sent no RARP for the guest: the switch learns its new port only "
        "from the guest's own traffic (measured as `announce`)",
    ),
    _p(
        "qemu_migration_disabled",
        QEMU,
        FATAL,
        r"Migration disabled: vhost",
        "the vhost-user backend cannot log dirty pages, so its writes would be lost",
    ),
    _p(
        "qemu_migration_load",
        QEMU,
        WARNING,
        r"load of migration failed|error while loading state|Unknown savevm section|"
        r"Failed to load device state|Failed to load XBZRLE page",
        "the destination could not load the migration stream; the migration's QMP status "
        "decides the case (a cancelled migration prints this on purpose)",
    ),
    _p("qemu_failed_to", QEMU, WARNING, r"\bFailed to\b", "QEMU failed an operation"),
    _p("qemu_warning", QEMU, WARNING, _QEMU + r".*\bwarning: ", "a warning from QEMU"),
    _p(
        "qemu_error",
        QEMU,
        WARNING,
        _QEMU,
        "an error QEMU reported with its program-name prefix",
    ),
    # -- the guest: Linux kernel and DPDK's virtio PMD on its console ---------------------
    _p(
        "guest_panic", GUEST, FATAL, _K + r"Kernel panic - not syncing", "the guest kernel panicked"
    ),
    _p(
        "guest_list_corruption",
        GUEST,
        FATAL,
        _K + r"list_(?:add|del) corruption",
        "the guest kernel found a corrupt list: guest memory was lost or overwritten",
        header=True,
    ),
    _p(
        "guest_oops",
        GUEST,
        FATAL,
        _K + r"(?:BUG: |kernel BUG at |Oops: |invalid opcode: |general protection fault|"
        r"Unable to handle kernel)",
        "the guest kernel crashed",
        header=True,
    ),
    _p(
        "guest_virtqueue_corrupt",
        GUEST,
        FATAL,
        r"virtio\S* virtio\d+: \S+:(?:id \d+ is not a head!|id \d+ out of range|"
        r"used len \d+ is larger than)",
        "the guest driver found a used id the ring never made available: ring state lost "
        "(virtio_ring.c BAD_RING)",
    ),
    _p(
        "guest_netdev_watchdog",
        GUEST,
        FATAL,
        r"NETDEV WATCHDOG: ",
        "a guest transmit queue stopped moving: the backend no longer consumes the ring",
        header=True,
    ),
    _p(
        "guest_tx_timeout",
        GUEST,
        FATAL,
        r"virtio_net \S+ \S+: TX timeout on queue|[Uu]nexpected TXQ \(\d+\) queue failure",
        "the guest's virtio-net transmit queue timed out or failed",
    ),
    _p(
        "guest_warning",
        GUEST,
        FATAL,
        _K + r"WARNING: ",
        "the guest kernel hit a WARN: an internal inconsistency",
        header=True,
    ),
    _p(
        "guest_segfault",
        GUEST,
        FATAL,
        r"\S+\[\d+\]: segfault at |" + _K + r"Segmentation fault",
        "a guest program crashed on a bad address: its memory may have been lost",
    ),
    _p(
        "guest_pmd_ring_corrupt",
        GUEST,
        FATAL,
        r"vring descriptor with no mbuf cookie at \d+",
        "the guest's virtio PMD found a used descriptor it never posted: ring state lost",
    ),
    _p(
        "guest_rcu_stall",
        GUEST,
        WARNING,
        r"rcu: INFO: \S+ (?:self-)?detected stalls?|rcu_\w+ detected stalls on CPUs",
        "a guest CPU made no progress for tens of seconds (under TCG an overloaded host "
        "can cause it; a lost interrupt too)",
        header=True,
    ),
    _p(
        "guest_hung_task",
        GUEST,
        WARNING,
        _K + r"INFO: task \S+ blocked for more than \d+ seconds",
        "a guest task waited for minutes (an I/O that never completed)",
        header=True,
    ),
    _p(
        "guest_call_trace",
        GUEST,
        FATAL,
        r"\bCall Trace:",
        "the guest kernel printed a backtrace: it hit a bug or an inconsistency",
    ),
)

BENIGN: tuple[Benign, ...] = (
    _b(
        "vhost_read_message",
        BACKEND,
        r"VHOST_CONFIG: .*read message VHOST_USER_\w+",
        "testpmd's vhost library logs every vhost-user request at INFO",
    ),
    _b(
        "vhost_inflight_info",
        BACKEND,
        r"VHOST_CONFIG: .*(?:get|set)_inflight_fd (?:num_queues|queue_size|mmap_size|"
        r"mmap_offset|fd|pervq_inflight_size)|send inflight (?:mmap_size|mmap_offset|fd)",
        "INFO lines of a successful inflight set-up",
    ),
    _b(
        "vhost_peer_closed",
        BACKEND,
        r"VHOST_CONFIG: .*vhost peer closed",
        "printed when a QEMU disconnects: the source after it quits, every QEMU at "
        "teardown (a QEMU dying mid-case is caught by the process watch)",
    ),
    _b(
        "vhost_reconnect_info",
        BACKEND,
        r"VHOST_CONFIG: .*(?:reconnecting\.\.\.|failed to connect: .*(?:No such file|"
        r"Connection refused))",
        "a client-mode socket retrying until QEMU's server socket exists",
    ),
    _b(
        "testpmd_promisc_unsupported",
        BACKEND,
        r"Error during enabling promiscuous mode for port \d+: Operation not supported",
        "testpmd asks every port for promiscuous mode; the vhost and af_packet PMDs "
        "decline it on every run",
    ),
    _b(
        "qemu_info",
        QEMU,
        _QEMU + r".*\binfo: ",
        "QEMU's informational lines, e.g. '-chardev socket,...: info: QEMU waiting for "
        "connection on: ...' at every start of a server=on socket",
    ),
    _b(
        "qemu_reconnect_info",
        QEMU,
        r"Unable to connect character device \S+: Failed to connect to .*(?:No such file|"
        r"Connection refused)",
        "a client socket with reconnect-ms retrying until its server's socket exists (a "
        "server-mode backend restarting); without reconnect-ms QEMU fails to start instead",
    ),
    _b(
        "qemu_terminating",
        QEMU,
        r"terminating on signal \d+",
        "vhostlm stops every QEMU with a signal at teardown; a QEMU that dies mid-case "
        "is reported by the process watch",
    ),
    _b(
        "guest_eal_warning",
        GUEST,
        r"EAL: WARNING",
        "DPDK's EAL in the guest's testpmd warns about TSC and hugepage details under TCG "
        "on every run (e.g. 'cpu flags constant_tsc=yes nonstop_tsc=no')",
    ),
)


def _benign(kind: str, line: str) -> Benign | None:
    return next((b for b in BENIGN if kind in b.kinds and b.regex.search(line)), None)


def _match(kind: str, line: str) -> Pattern | None:
    return next((p for p in PATTERNS if kind in p.kinds and p.regex.search(line)), None)


def scan(
    program: str,
    kind: str,
    lines: Iterable[tuple[float, str]],
    until: float | None = None,
) -> list[Anomaly]:
    """The anomalies in one program's (time, line) output, in order; lines after `until`
    (teardown) are left out.

    A guest "Call Trace:" within TRACE_WINDOW lines of a report header (an oops, a WARN,
    an RCU stall ...) is that report's backtrace and takes its severity; on its own it
    is fatal.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown program kind {kind!r}: one of {sorted(KINDS)}")
    found: list[Anomaly] = []
    header: tuple[int, Pattern] | None = None
    for index, (at, raw) in enumerate(lines):
        if until is not None and at > until:
            continue
        line = raw.strip()
        if not line or _benign(kind, line) is not None:
            continue
        pattern = _match(kind, line)
        if pattern is None:
            continue
        severity, reason = pattern.severity, pattern.reason
        trace_of = header[1] if header is not None and index - header[0] <= TRACE_WINDOW else None
        if pattern.name == "guest_call_trace" and trace_of is not None:
            severity = trace_of.severity
            reason = f"the backtrace of the {trace_of.name} report above it"
        if pattern.header:
            header = (index, pattern)
        found.append(Anomaly(program, at, line, pattern.name, severity, reason))
    return found


def scan_logs(
    sources: Iterable[tuple[str, str, Sequence[tuple[float, str]]]],
    until: float | None = None,
    limit: int = MAX_ANOMALIES,
) -> list[Anomaly]:
    """Scan (program, kind, lines) of every program; at most `limit`, sorted by time.

    When there are more, the fatal ones are kept first, so the case's verdict never
    depends on the cap.
    """
    found = [a for program, kind, lines in sources for a in scan(program, kind, lines, until)]
    kept = sorted(found, key=lambda a: (a.severity != FATAL, a.at))[:limit]
    return sorted(kept, key=lambda a: a.at)


def fatal(anomalies: Iterable[Anomaly]) -> Anomaly | None:
    """The first fatal anomaly (by time), the one a failing case names."""
    return min((a for a in anomalies if a.severity == FATAL), key=lambda a: a.at, default=None)


def _shorten(line: str, width: int = 160) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


def anomaly_failure(anomalies: Iterable[Anomaly], t0: float | None = None) -> str | None:
    """The case's one-line failure reason for its first fatal anomaly, or None.

    "backup testpmd printed '...' at +1.234 s: <reason>", the time relative to `t0` (the
    case's start); without `t0`, the local wall-clock time: the line alone says who,
    what and when.
    """
    items = list(anomalies)
    first = fatal(items)
    if first is None:
        return None
    if t0 is not None:
        when = f"+{first.at - t0:.3f} s"
    else:
        millis = int(first.at * 1000) % 1000
        when = time.strftime("%H:%M:%S", time.localtime(first.at)) + f".{millis:03d}"
    others = sum(1 for a in items if a.severity == FATAL) - 1
    more = f" (and {others} more fatal line{'s' if others != 1 else ''})" if others else ""
    return f"{first.program} printed {_shorten(first.line)!r} at {when}: {first.reason}{more}"


def as_dicts(anomalies: Iterable[Anomaly], t0: float) -> list[dict[str, object]]:
    """results.json's `integrity.anomalies`: each with its time in ms after `t0`."""
    return [
        {
            "program": a.program,
            "at_ms": round((a.at - t0) * 1000.0, 1),
            "line": a.line,
            "pattern": a.pattern,
            "severity": a.severity,
            "reason": a.reason,
        }
        for a in anomalies
    ]


# What a QEMU prints when its vhost-user backend goes away under it, as a restart on purpose
# does (QEMU 10.0): its write of GET_VRING_BASE to the closed socket fails ("Failed to set
# msg fds.", -EINVAL: hw/virtio/vhost-user.c vhost_user_write), so vhost_virtqueue_stop
# (hw/virtio/vhost.c) prints "vhost VQ n ring restore failed: -22" and resyncs the ring to
# the guest's used index: what QEMU is designed to do when the backend holding the ring
# state has gone. In a reconnect case, inside the restart's span, these are expected.
AT_BACKEND_RESTART = frozenset({"qemu_ring_restore_failed", "qemu_vhost_user_channel"})


def expected_at_restart(
    anomalies: Iterable[Anomaly], spans: Sequence[tuple[float, float]]
) -> list[Anomaly]:
    """`anomalies` with the QEMU lines of AT_BACKEND_RESTART that came inside one of `spans`
    (a backend restarted on purpose: from the restart to its ready line) made warnings
    that say so; every other line as it was."""
    out = []
    for a in anomalies:
        if a.pattern in AT_BACKEND_RESTART and any(lo <= a.at <= hi for lo, hi in spans):
            why = f"expected: the backend was restarted on purpose ({a.reason})"
            a = dataclasses.replace(a, severity=WARNING, reason=why)
        out.append(a)
    return out
