"""The anomaly scanner on lines as the real programs print them.

The excerpts use the programs' own format strings with their prefixes: DPDK 22.11's
"VHOST_CONFIG: (<socket>) ..." (lib/vhost/vhost.h VHOST_LOG_CONFIG), QEMU's
"qemu-system-x86_64: ..." (error_report), Linux 6.1's printk time stamps.
"""

from __future__ import annotations

import pytest

from vhostlm.integrity import (
    FATAL,
    WARNING,
    Anomaly,
    anomaly_failure,
    as_dicts,
    fatal,
    scan,
    scan_logs,
)
from vhostlm.integrity import anomalies as an

SOCK = "/run/vhostlm/3f2a/backup/vhost-net.sock"
T0 = 1_700_000_000.0


def timed(lines: list[str], start: float = T0, step: float = 0.1) -> list[tuple[float, str]]:
    """Give `lines` arrival times `step` apart from `start`."""
    return [(start + i * step, line) for i, line in enumerate(lines)]


def cfg(text: str) -> str:
    """A DPDK 22.11 vhost config line for the backup's socket."""
    return f"VHOST_CONFIG: ({SOCK}) {text}"


# What a backend testpmd prints on a normal run (DPDK 22.11 INFO level): nothing to report.
NORMAL_BACKEND = [
    "EAL: Detected CPU lcores: 2",
    "EAL: Detected NUMA nodes: 1",
    cfg("vhost-user server: socket created, fd: 24"),
    cfg("binding succeeded"),
    "Error during enabling promiscuous mode for port 0: Operation not supported - ignore",
    "Checking link statuses...",
    "Done",
    "testpmd> " + cfg("new vhost user connection is 27"),
    cfg("new device, handle is 0"),
    cfg("read message VHOST_USER_GET_FEATURES"),
    cfg("read message VHOST_USER_GET_PROTOCOL_FEATURES"),
    cfg("negotiated Vhost-user protocol features: 0xcbf"),
    cfg("read message VHOST_USER_SET_MEM_TABLE"),
    cfg("guest memory region size: 0x40000000"),
    cfg("\t guest physical addr: 0x0"),
    cfg("read message VHOST_USER_SET_LOG_BASE"),
    cfg("log mmap size: 32768, offset: 0"),
    cfg("read message VHOST_USER_GET_INFLIGHT_FD"),
    cfg("get_inflight_fd num_queues: 1"),
    cfg("send inflight mmap_size: 4224"),
    cfg("read message VHOST_USER_SET_VRING_BASE"),
    cfg("vring base idx:0 last_used_idx:1208 last_avail_idx:1208."),
    cfg("read message VHOST_USER_SET_VRING_KICK"),
    cfg("vring kick idx:1 file:52"),
    cfg("new device status(0x0000000f):"),
    cfg("\t-FAILED: 0"),
    cfg("virtio is now ready for processing."),
    "Port 0: link state change event",
    cfg("vhost peer closed"),
]

NORMAL_QEMU = [
    "qemu-system-x86_64: -chardev socket,id=mon,path=/run/vhostlm/3f2a/qmp.sock,server=on: "
    "info: QEMU waiting for connection on: disconnected:unix:/run/vhostlm/3f2a/qmp.sock",
    "qemu-system-x86_64: terminating on signal 15 from pid 4242 (python3)",
]

NORMAL_GUEST = [
    "/ # dpdk-testpmd -l 0-1 -n 4 --iova-mode=pa -- -i",
    "EAL: WARNING: cpu flags constant_tsc=yes nonstop_tsc=no -> using unreliable clock cycles !",
    "testpmd> start",
    "RX 1374",
    "[    7.123456] virtio_net virtio0 eth0: renamed from eth0",
]

# One real line per pattern: each must be found, and by that pattern (first match wins).
EXAMPLES = {
    "vhost_ring_mismatch": cfg("last_used_idx (1208) and vq->used->idx (1210) mismatches;"),
    "vhost_packets_resent": cfg("some packets maybe resent for Tx and dropped for Rx"),
    "vhost_dirty_log": f"VHOST_DATA: ({SOCK}) failed to write log for IOVA 0x7f00. "
    "No IOTLB entry found",
    "vhost_inflight": cfg("failed to alloc dev inflight area"),
    "vhost_state_message_failed": cfg("processing VHOST_USER_SET_LOG_BASE failed."),
    "vhost_message_failed": cfg("vhost message (req: 44) was not handled."),
    "vhost_memory": cfg("failed to mmap region 0"),
    "backend_panic": "PANIC in rte_eal_init():",
    "vhost_data_error": f"VHOST_DATA: ({SOCK}) failed to make RARP packet.",
    "vhost_config_error": cfg("recvmsg failed on fd 27 (Connection reset by peer)"),
    "backend_error": "testpmd> Error: Invalid port number 3",
    "backend_failed_to": "Failed to setup RX queue: No mempool allocation on the socket 0",
    "qemu_vq_inconsistent": "qemu-system-x86_64: VQ 0 size 0x100 Guest index 0x3e8 "
    "inconsistent with Host index 0x2: delta 0x3e6",
    "qemu_ring_restore_failed": "qemu-system-x86_64: vhost VQ 0 ring restore failed: -22: "
    "Invalid argument (22)",
    "qemu_virtqueue_error": "qemu-system-x86_64: Guest moved used index from 5 to 900",
    "qemu_vhost_failed": "qemu-system-x86_64: vhost_set_log_base failed: "
    "Connection reset by peer (104)",
    "qemu_vhost_user_channel": "qemu-system-x86_64: Failed to set msg fds.",
    "qemu_rarp": "Vhost user backend fails to broadcast fake RARP",
    "qemu_migration_disabled": "qemu-system-x86_64: Migration disabled: vhost-user backend "
    "lacks VHOST_USER_PROTOCOL_F_LOG_SHMFD feature.",
    "qemu_migration_load": "qemu-system-x86_64: load of migration failed: Input/output error",
    "qemu_failed_to": "qemu-system-x86_64: Failed to connect to '/run/vhostlm/x.sock': "
    "No such file or directory",
    "qemu_error": "qemu-system-x86_64: -netdev vhost-user,id=net0,chardev=char0: "
    'chardev "char0" not found',
    "qemu_warning": "qemu-system-x86_64: warning: TCG doesn't support requested feature: "
    "CPUID.01H:ECX.vmx [bit 5]",
    "guest_panic": "[   40.118211] Kernel panic - not syncing: Fatal exception in interrupt",
    "guest_list_corruption": "[   40.101012] list_add corruption. prev->next should be next "
    "(ffff9d2f7fd2bd90), but was 0000000000000000. (prev=ffff9d2f41b8d6f0).",
    "guest_oops": "[   40.101100] general protection fault, probably for non-canonical address "
    "0xdead000000000122: 0000 [#1] PREEMPT SMP NOPTI",
    "guest_virtqueue_corrupt": "[   31.204512] virtio_net virtio0: output.0:id 74 is not a head!",
    "guest_netdev_watchdog": "[   52.000301] NETDEV WATCHDOG: eth0 (virtio_net): transmit "
    "queue 0 timed out",
    "guest_tx_timeout": "[   52.000400] virtio_net virtio0 eth0: TX timeout on queue: 0, sq: "
    "output.0, vq: 0x1, name: output.0, 5124000 usecs ago",
    "guest_warning": "[   52.000350] WARNING: CPU: 1 PID: 0 at net/sched/sch_generic.c:525 "
    "dev_watchdog+0x207/0x210",
    "guest_segfault": "[   61.5] dpdk-testpmd[211]: segfault at 10 ip 00007f2b sp 00007ffd "
    "error 4 in librte_net_virtio.so.23",
    "guest_pmd_ring_corrupt": "virtqueue_dequeue_burst_rx(): vring descriptor with no mbuf "
    "cookie at 12",
    "guest_rcu_stall": "[   83.4] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
    "guest_hung_task": "[  242.9] INFO: task kworker/0:1:23 blocked for more than 120 seconds.",
    "guest_call_trace": "[   40.101300] Call Trace:",
}
# One real line per benign entry, and whether a pattern would report it without the entry.
BENIGN_EXAMPLES = {
    "vhost_read_message": ("backend", cfg("read message VHOST_USER_GET_VRING_BASE"), False),
    "vhost_inflight_info": ("backend", cfg("set_inflight_fd pervq_inflight_size: 4160"), False),
    "vhost_peer_closed": ("backend", cfg("vhost peer closed"), False),
    "vhost_reconnect_info": (
        "backend",
        cfg("failed to connect: No such file or directory"),
        True,
    ),
    "testpmd_promisc_unsupported": (
        "backend",
        "Error during enabling promiscuous mode for port 0: Operation not supported - ignore",
        True,
    ),
    "qemu_info": ("qemu", NORMAL_QEMU[0], True),
    "qemu_terminating": ("qemu", NORMAL_QEMU[1], True),
    "qemu_reconnect_info": (
        "qemu",
        "qemu-system-x86_64: Unable to connect character device char0: Failed to connect to "
        "'/run/vhostlm/3f2a/sock/c-backup-vhost.sock': No such file or directory",
        True,
    ),
    "guest_eal_warning": ("guest", NORMAL_GUEST[1], False),
}
KIND = {"vhost": "backend", "backend": "backend", "qemu": "qemu", "guest": "guest"}


def kind_of(name: str) -> str:
    """The program kind a pattern name belongs to, by its prefix."""
    return KIND[name.split("_")[0]]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_pattern_finds_its_real_line(name: str) -> None:
    found = scan("p", kind_of(name), [(T0, EXAMPLES[name])])
    assert [a.pattern for a in found] == [name]


def test_every_pattern_has_an_example_and_a_documented_row() -> None:
    names = [p.name for p in an.PATTERNS]
    assert len(names) == len(set(names))
    assert set(names) == set(EXAMPLES)
    for p in an.PATTERNS:
        assert p.severity in (FATAL, WARNING) and p.kinds <= an.KINDS and p.reason
    for b in an.BENIGN:
        assert b.kinds <= an.KINDS and b.why


@pytest.mark.parametrize("name", sorted(BENIGN_EXAMPLES))
def test_each_benign_entry_silences_its_real_line(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kind, line, load_bearing = BENIGN_EXAMPLES[name]
    entry = an._benign(kind, line)
    assert entry is not None and entry.name == name
    assert scan("p", kind, [(T0, line)]) == []
    monkeypatch.setattr(an, "BENIGN", ())
    assert bool(scan("p", kind, [(T0, line)])) is load_bearing


def test_every_benign_entry_has_an_example() -> None:
    assert {b.name for b in an.BENIGN} == set(BENIGN_EXAMPLES)


@pytest.mark.parametrize(
    ("kind", "lines"),
    [("backend", NORMAL_BACKEND), ("qemu", NORMAL_QEMU), ("guest", NORMAL_GUEST)],
)
def test_a_normal_run_reports_nothing(kind: str, lines: list[str]) -> None:
    assert scan("p", kind, timed(lines)) == []


def test_backup_ring_mismatch_fails_the_case_naming_program_line_and_time() -> None:
    lines = timed(
        [
            cfg("read message VHOST_USER_SET_VRING_ADDR"),
            cfg("last_used_idx (1208) and vq->used->idx (1210) mismatches;"),
            cfg("some packets maybe resent for Tx and dropped for Rx"),
            cfg("virtio is now ready for processing."),
        ],
        start=T0 + 1.134,
    )
    found = scan("backup testpmd", "backend", lines)
    assert [(a.pattern, a.severity) for a in found] == [
        ("vhost_ring_mismatch", FATAL),
        ("vhost_packets_resent", FATAL),
    ]
    first = fatal(found)
    assert first is not None and first.at == pytest.approx(T0 + 1.234)
    reason = anomaly_failure(found, t0=T0)
    assert reason is not None
    mismatch = cfg("last_used_idx (1208) and vq->used->idx (1210) mismatches;")
    assert reason.startswith(
        f"backup testpmd printed '{mismatch}' at +1.234 s: the ring state was lost"
    )
    assert reason.endswith("(and 1 more fatal line)")


def test_without_t0_the_failure_gives_the_wall_clock_time() -> None:
    found = [Anomaly("host qemu", T0 + 0.5, "x", "qemu_ring_restore_failed", FATAL, "lost")]
    reason = anomaly_failure(found)
    assert reason is not None and ".500: lost" in reason and "+" not in reason


def test_teardown_lines_after_until_are_not_blamed() -> None:
    lines = [
        (T0 + 1.0, "qemu-system-x86_64: Failed to set msg fds."),
        (T0 + 9.0, "qemu-system-x86_64: Failed to set msg fds."),
        (
            T0 + 9.1,
            "qemu-system-x86_64: vhost VQ 0 ring restore failed: -22: Invalid argument (22)",
        ),
    ]
    assert [a.at for a in scan("host qemu", "qemu", lines, until=T0 + 5.0)] == [T0 + 1.0]
    assert fatal(scan("host qemu", "qemu", lines, until=T0 + 5.0)) is None
    assert fatal(scan("host qemu", "qemu", lines)) is not None  # the same lines, no until


def test_a_guest_call_trace_on_its_own_is_fatal() -> None:
    lines = timed(
        [
            "RX 1708",
            "[   40.101300] Call Trace:",
            "[   40.101301]  <TASK>",
            "[   40.101302]  __napi_schedule+0x22/0x90",
        ]
    )
    found = scan("backup console", "guest", lines)
    assert [(a.pattern, a.severity) for a in found] == [("guest_call_trace", FATAL)]
    assert anomaly_failure(found, t0=T0) is not None


def test_the_napi_list_corruption_crash_is_fatal_first_by_its_header() -> None:
    lines = timed(
        [
            EXAMPLES["guest_list_corruption"],
            "[   40.101050] ------------[ cut here ]------------",
            "[   40.101060] kernel BUG at lib/list_debug.c:30!",
            "[   40.101070] invalid opcode: 0000 [#1] PREEMPT SMP NOPTI",
            "[   40.101300] Call Trace:",
            "[   40.101301]  <IRQ>",
            EXAMPLES["guest_panic"],
        ]
    )
    found = scan("backup console", "guest", lines)
    assert all(a.severity == FATAL for a in found)
    assert [a.pattern for a in found] == [
        "guest_list_corruption",
        "guest_oops",
        "guest_oops",
        "guest_call_trace",
        "guest_panic",
    ]
    first = fatal(found)
    assert first is not None and first.pattern == "guest_list_corruption"


def test_a_trace_after_a_warning_header_is_only_a_warning() -> None:
    lines = timed([EXAMPLES["guest_rcu_stall"], "[   83.5] Call Trace:", "[   83.5]  <TASK>"])
    found = scan("host console", "guest", lines)
    assert [(a.pattern, a.severity) for a in found] == [
        ("guest_rcu_stall", WARNING),
        ("guest_call_trace", WARNING),
    ]
    assert "guest_rcu_stall" in found[1].reason
    assert fatal(found) is None
    # far after the header, a trace is its own again
    far = timed([EXAMPLES["guest_rcu_stall"], *["RX 1"] * (an.TRACE_WINDOW + 1), "Call Trace:"])
    assert scan("host console", "guest", far)[-1].severity == FATAL


def test_warnings_are_reported_but_do_not_fail() -> None:
    found = scan_logs(
        [
            (
                "backup qemu",
                "qemu",
                timed([EXAMPLES["qemu_rarp"], EXAMPLES["qemu_migration_load"]]),
            ),
            ("host testpmd", "backend", timed([EXAMPLES["vhost_config_error"]])),
        ],
        until=None,
    )
    assert len(found) == 3 and {a.severity for a in found} == {WARNING}
    assert fatal(found) is None
    assert anomaly_failure(found, t0=T0) is None


def test_patterns_apply_only_to_their_programs() -> None:
    # a kernel-looking line in testpmd's output and a vhost line on a guest console
    assert scan("host testpmd", "backend", timed(["Call Trace:", "WARNING: CPU: 0 PID: 1"])) == []
    assert scan("console", "guest", timed([EXAMPLES["vhost_ring_mismatch"]])) == []
    with pytest.raises(ValueError, match="unknown program kind"):
        scan("x", "switch", [])


def test_kernel_lines_behind_a_prompt_are_found() -> None:
    found = scan(
        "console",
        "guest",
        timed(
            ["testpmd> [   40.1] BUG: kernel NULL pointer dereference, address: 0000000000000008"]
        ),
    )
    assert [a.pattern for a in found] == ["guest_oops"]
    lockup = "[   52.1] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [swapper/1:0]"
    assert [a.pattern for a in scan("console", "guest", timed([lockup]))] == ["guest_oops"]


def test_scan_logs_sorts_by_time_and_caps_keeping_the_fatal_ones() -> None:
    noise = [(T0 + i, EXAMPLES["qemu_rarp"]) for i in range(10)]
    late_fatal = [(T0 + 20, EXAMPLES["vhost_ring_mismatch"])]
    found = scan_logs(
        [("host qemu", "qemu", noise), ("backup testpmd", "backend", late_fatal)],
        until=None,
        limit=4,
    )
    assert len(found) == 4
    assert [a.at for a in found] == sorted(a.at for a in found)
    assert found[-1].program == "backup testpmd" and found[-1].severity == FATAL


def test_as_dicts_gives_ms_after_t0() -> None:
    found = scan("backup testpmd", "backend", [(T0 + 1.2345, EXAMPLES["vhost_ring_mismatch"])])
    assert as_dicts(found, T0) == [
        {
            "program": "backup testpmd",
            "at_ms": 1234.5,
            "line": EXAMPLES["vhost_ring_mismatch"],
            "pattern": "vhost_ring_mismatch",
            "severity": FATAL,
            "reason": found[0].reason,
        }
    ]


def test_lines_are_stripped_and_blank_ones_skipped() -> None:
    found = scan("c", "guest", [(T0, "   "), (T0, "\t[  1.0] Kernel panic - not syncing: x  ")])
    assert [a.line for a in found] == ["[  1.0] Kernel panic - not syncing: x"]
