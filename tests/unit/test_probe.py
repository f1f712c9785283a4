"""Probe frames, reply parsing, announce parsing, what the sniffer watches, the pass criteria."""

from __future__ import annotations

import json
import queue
import socket
import struct
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether

from tests.unit.test_payload import icmpecho_reply
from vhostlm.addresses import GUEST_IP, GUEST_MAC, TESTER_IP
from vhostlm.errors import StepFailed
from vhostlm.measure.announce import first_announcement, parse_announcements
from vhostlm.measure.probe import (
    PACKET_STATISTICS,
    SO_TIMESTAMPNS,
    SOL_PACKET,
    ProbeRun,
    build_template,
    cmsg_time,
    payload_for,
    reply_seq,
    stamp,
)
from vhostlm.nodes.clock import Clocks
from vhostlm.plans.env import RunOptions
from vhostlm.plans.traffic import Traffic, check_limits
from vhostlm.testbed.topology import Nic, Tools

TEMPLATE = build_template(GUEST_MAC, "02:00:00:00:00:03", TESTER_IP, GUEST_IP)


as_reply = icmpecho_reply  # what the guest sends back


@pytest.mark.parametrize("size", [62, 63, 256, 257, 1514])
@pytest.mark.parametrize("seq", [0, 1, 65535, 65536, 2**40 + 3])
def test_stamped_request_has_a_valid_checksum_and_comes_back(seq: int, size: int) -> None:
    template = build_template(GUEST_MAC, "02:00:00:00:00:03", TESTER_IP, GUEST_IP, size)
    frame = stamp(template, seq)
    assert len(frame) == size
    pkt = Ether(frame)
    assert pkt[ICMP].type == 8 and pkt[ICMP].seq == seq & 0xFFFF and pkt[ICMP].id == 0x7668
    assert pkt[IP].len == size - 14
    # scapy's own checksum, not ours: rebuilt with the field left for scapy to compute
    stamped = pkt[ICMP].chksum
    del pkt[ICMP].chksum
    assert Ether(bytes(pkt))[ICMP].chksum == stamped
    # the payload round trip: what scapy parses is probe `seq`'s payload, seq in each word
    load = bytes(pkt[ICMP].payload)
    assert load == payload_for(size).data(seq)
    codec = payload_for(size)
    decoded = {codec.word_seq(load[12 + 8 * j : 20 + 8 * j], j) for j in range(codec.full_words)}
    assert decoded == {seq}
    assert reply_seq(frame) is None  # a request is not a reply
    assert reply_seq(as_reply(frame)) == seq


def test_consecutive_probes_carry_unrelated_bodies() -> None:
    # every word differs between neighbours (mixed, not a counter): a stale word is told apart
    a, b = (payload_for(256).body(s) for s in (1000, 1001))
    assert all(a[i : i + 8] != b[i : i + 8] for i in range(0, 200, 8))
    assert len(set(a[i : i + 8] for i in range(0, 200, 8))) == 25  # and from each other


def test_foreign_frames_are_not_replies() -> None:
    other = bytes(Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / ICMP(type=0) / b"hello-world-xyz")
    assert reply_seq(other) is None
    assert reply_seq(b"\x00" * 20) is None


def timespec(sec: int, nsec: int) -> list[tuple[int, int, bytes]]:
    """recvmsg's ancillary data with the kernel's SCM_TIMESTAMPNS (a 64-bit timespec)."""
    return [(socket.SOL_SOCKET, SO_TIMESTAMPNS, struct.pack("=qq", sec, nsec))]


class FakeRx:
    """A receive socket fed by the test: (frame, kernel stamp, packet type) from a queue,
    TimeoutError when idle; PACKET_STATISTICS as the test sets them."""

    def __init__(self) -> None:
        self.frames: queue.Queue[tuple[bytes, float | None, int]] = queue.Queue()
        self.seen = threading.Semaphore(0)
        self.stats = (0, 0)

    def recvmsg(
        self, _size: int, _anc: int
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, tuple[str, int, int]]:
        try:
            frame, at, kind = self.frames.get(timeout=0.05)
        except queue.Empty:
            raise TimeoutError from None
        self.seen.release()
        anc = [] if at is None else timespec(int(at), round((at - int(at)) * 1e9))
        return frame, anc, 0, ("veth", 0x0800, kind)

    def getsockopt(self, level: int, name: int, size: int) -> bytes:
        assert (level, name, size) == (SOL_PACKET, PACKET_STATISTICS, 8)
        packed, self.stats = struct.pack("=II", *self.stats), (0, 0)  # reset on read
        return packed


def receiving(rx: FakeRx) -> tuple[ProbeRun, threading.Thread]:
    """A ProbeRun without AF_PACKET sockets whose receive loop reads `rx`."""
    run = ProbeRun.__new__(ProbeRun)
    run.init_state(TEMPLATE, 1000)
    run.send_ts.extend([0.0] * 9)
    run.rx = rx  # type: ignore[assignment]
    thread = threading.Thread(target=run.receive, daemon=True)
    thread.start()
    return run, thread


def test_stopping_the_sender_keeps_the_receiver_for_replies_in_flight() -> None:
    rx = FakeRx()
    run, thread = receiving(rx)
    rx.frames.put((as_reply(stamp(TEMPLATE, 7)), None, socket.PACKET_HOST))
    assert rx.seen.acquire(timeout=5)
    run.sending = False  # what SIGTERM does: the last probes are still on their way back
    rx.frames.put((as_reply(stamp(TEMPLATE, 8)), None, socket.PACKET_HOST))
    assert rx.seen.acquire(timeout=5)
    run.receiving = False  # what main() does after the drain
    thread.join(5)
    assert not thread.is_alive()
    assert list(run.reply_seq) == [7, 8]
    assert run.payload.as_dict()["checked"] == 2 and run.payload.as_dict()["corrupt"] == 0
    assert run.unstamped == 2  # no kernel stamp: timed at the read


def test_replies_take_the_kernels_stamp_and_our_own_requests_are_ignored() -> None:
    rx = FakeRx()
    run, thread = receiving(rx)
    before = time.time()
    rx.frames.put((as_reply(stamp(TEMPLATE, 3)), 1800000000.25, socket.PACKET_HOST))
    # a copy of our own request (a kernel without PACKET_IGNORE_OUTGOING), even a reply-
    # shaped one, is never counted
    rx.frames.put((as_reply(stamp(TEMPLATE, 4)), 1800000000.5, socket.PACKET_OUTGOING))
    rx.frames.put((as_reply(stamp(TEMPLATE, 5)), 1800000000.75, socket.PACKET_HOST))
    for _ in range(3):
        assert rx.seen.acquire(timeout=5)
    run.receiving = False
    thread.join(5)
    assert list(run.reply_seq) == [3, 5]
    assert list(run.reply_ts) == pytest.approx([1800000000.25, 1800000000.75], abs=1e-6)
    # the read happened now: the lag is read time - the kernel's stamp
    assert all(lag >= before - 1800000000.75 for lag in run.read_lag)
    assert run.unstamped == 0


@pytest.mark.parametrize(
    ("anc", "expected"),
    [
        (timespec(1764151220, 123456789), 1764151220.123456789),
        ([(socket.SOL_SOCKET, SO_TIMESTAMPNS, struct.pack("=ii", 1764151220, 5))], 1764151220.0),
        # another control message first
        ([(socket.SOL_SOCKET, 29, b"\0" * 16), *timespec(7, 500_000_000)], 7.5),
        ([(socket.SOL_SOCKET, SO_TIMESTAMPNS, b"\0" * 4)], None),  # too short: no stamp
        ([(SOL_PACKET, SO_TIMESTAMPNS, struct.pack("=qq", 1, 0))], None),  # not SOL_SOCKET
        ([], None),
    ],
)  # fmt: skip
def test_the_kernel_stamp_is_read_from_the_ancillary_data(
    anc: list[tuple[int, int, bytes]], expected: float | None
) -> None:
    got = cmsg_time(anc)
    assert got == (None if expected is None else pytest.approx(expected, abs=1e-6))


def test_receive_drops_are_polled_with_when_and_dumped(tmp_path: Path) -> None:
    rx = FakeRx()
    run = ProbeRun.__new__(ProbeRun)
    run.init_state(TEMPLATE, 1000)
    run.rx = rx  # type: ignore[assignment]
    run.rx_info.update(clock="kernel", ignore_outgoing=True, rcvbuf=1 << 20)
    run.poll_stats()  # the first poll starts the clock; nothing dropped yet
    rx.stats = (120, 0)
    run.poll_stats()
    rx.stats = (30, 4)  # tp_packets counts the dropped frames too
    run.poll_stats()
    run.poll_stats()
    assert (run.packets, run.drops) == (150, 4)
    assert len(run.drop_log) == 1 and run.drop_log[0][2] == 4
    since, until, _ = run.drop_log[0]
    assert since <= until
    run.on_frame(as_reply(stamp(TEMPLATE, 0)), 10.0, 10.002)
    out = tmp_path / "probe.json"
    run.dump(out)
    data = json.loads(out.read_text())
    assert data["replies"] == [[0, 10.0]]
    assert data["rx"]["drops"] == 4 and data["rx"]["packets"] == 150
    assert data["rx"]["drop_log"] == run.drop_log and data["rx"]["clock"] == "kernel"
    assert data["rx"]["read_lag_ms"] == [pytest.approx(2.0, abs=1e-3)]


TCPDUMP = """\
listening on p-backup, link-type EN10MB (Ethernet), snapshot length 262144 bytes
1795688040.900000 52:54:00:00:00:01 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Request who-has 198.18.1.3 tell 198.18.1.100, length 28
1795688040.927366 52:54:00:00:00:01 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Request who-has 198.18.1.100 tell 198.18.1.100, length 28
1795688041.000001 52:54:00:00:00:01 > ff:ff:ff:ff:ff:ff, ethertype Reverse ARP (0x8035), length 60: Reverse Request who-is 52:54:00:00:00:01 tell 52:54:00:00:00:01, length 46
"""  # noqa: E501


def test_announcements_are_classified_and_the_first_after_a_time_found() -> None:
    found = parse_announcements(TCPDUMP)
    assert [a.kind for a in found] == ["arp", "garp", "rarp"]
    assert found[1].at == pytest.approx(1795688040.927366)
    first = first_announcement(found, 1795688040.0)
    assert first is not None and first.kind == "garp"
    later = first_announcement(found, 1795688040.95)
    assert later is not None and later.kind == "rarp"
    assert first_announcement(found, 1795688042.0) is None


def test_limits_fail_with_the_measured_figure() -> None:
    measure = {"outage_ms": 48.25, "lost": 30}
    assert "within limits" in check_limits(measure, 100.0, 50)
    with pytest.raises(StepFailed, match=r"outage 48\.250 ms exceeds --max-outage-ms 0\.001"):
        check_limits(measure, 0.001, None)
    with pytest.raises(StepFailed, match="30 probes lost exceeds --max-loss 10"):
        check_limits(measure, None, 10)
    with pytest.raises(StepFailed, match="no probe figures"):
        check_limits({}, 1.0, None)


class RecordingNode:
    """A node that records the command lines of the processes made on it."""

    def __init__(self, label: str) -> None:
        self.label = self.name = label
        self.argv: dict[str, list[str]] = {}

    def process(self, name: str, argv: list[str], rundir: Any) -> Any:
        self.argv[name] = argv
        return SimpleNamespace(name=name, stop=lambda: None)

    def exists(self, path: str) -> bool:
        return False


def traffic_argv(tmp_path: Path, options: RunOptions, **guest: str) -> tuple[list[str], str]:
    """(the tester's argv, the backup sniffer's tcpdump filter) of a case's Traffic."""
    tester, switch = RecordingNode("tester"), RecordingNode("switch")
    bed = SimpleNamespace(
        nic=lambda role: Nic(interface="eth0"), node=lambda role: tester,
        tools=lambda role: Tools(python="python3"), workdir=lambda role: str(tmp_path),
        sniff_points=lambda: {r: (switch, f"p-{r}") for r in ("host", "backup")},
        clocks=Clocks({}),
    )  # fmt: skip
    env = SimpleNamespace(bed=bed, options=options, rundir=SimpleNamespace(path=tmp_path))
    with ExitStack() as stack:
        Traffic("c", env, stack, **guest)  # type: ignore[arg-type]
    return tester.argv["c-tester"], switch.argv["c-announce-host"][-1]


def test_sniffer_watches_the_guests_mac_not_the_testers_destination(tmp_path: Path) -> None:
    # --dst-mac only says where the tester's frames go; announcements come from the MAC
    # QEMU gave the guest's NIC (the old sniffer took the GUEST_MAC constant, whatever the VM)
    tester, sniffed = traffic_argv(
        tmp_path, RunOptions(dst_mac="ff:ff:ff:ff:ff:ff"), guest_mac="52:54:00:12:34:56"
    )
    assert tester[tester.index("--dst-mac") + 1] == "ff:ff:ff:ff:ff:ff"
    assert sniffed == "ether src 52:54:00:12:34:56 and (rarp or arp)"


def test_by_default_the_sniffer_and_tester_use_the_guests_mac(tmp_path: Path) -> None:
    tester, sniffed = traffic_argv(tmp_path, RunOptions())
    assert tester[tester.index("--dst-mac") + 1] == GUEST_MAC
    assert tester[tester.index("--src-ip") + 1 :][:3] == [TESTER_IP, "--dst-ip", GUEST_IP]
    assert sniffed == f"ether src {GUEST_MAC} and (rarp or arp)"
    _, sniffed = traffic_argv(tmp_path, RunOptions(dst_mac="02:00:00:00:00:aa"))
    assert GUEST_MAC in sniffed and "02:00:00:00:00:aa" not in sniffed


def test_a_stalled_sender_goes_on_steadily_instead_of_bursting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After the tester itself stalls for 0.5 s it sends at most MAX_BURST probes back to
    back, then keeps the rate: a burst of the 500 it owed was lost in the path."""
    from vhostlm.measure import probe

    clock = {"now": 0.0}
    sends: list[float] = []  # the clock at each send

    class Tx:
        def send(self, frame: bytes) -> int:
            sends.append(clock["now"])
            return len(frame)

    def sleep(seconds: float) -> None:
        # 1 ms a loop, and one stall of 0.5 s after the 100th probe
        clock["now"] += 0.5 if len(sends) == 100 and clock["now"] < 0.5 else max(seconds, 0.001)

    monkeypatch.setattr(probe.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(probe.time, "sleep", sleep)
    run = ProbeRun.__new__(ProbeRun)
    run.init_state(TEMPLATE, 1000)
    run.tx = Tx()  # type: ignore[assignment]
    run.sending = True
    run.poll_stats = lambda: None  # type: ignore[method-assign]
    run.send(300)
    per_instant: dict[float, int] = {}
    for at in sends:
        per_instant[at] = per_instant.get(at, 0) + 1
    assert len(sends) == 300
    assert max(per_instant.values()) <= 8 == probe.MAX_BURST
    stall = [b - a for a, b in zip(sends, sends[1:], strict=False) if b - a > 0.1]
    assert stall == [pytest.approx(0.5, abs=0.002)]  # the stall stays visible as a send gap
    # and it says so: one catch-up, the probe time given up, the rate it achieved
    assert run.behind_count == 1 and run.behind_s == pytest.approx(0.492, abs=0.002)
    assert len(run.behind_log) == 1 and run.behind_log[0][1] == pytest.approx(0.492, abs=0.002)
    assert run.rate_line().startswith("rate asked 1000 achieved ")
    assert run.rate_line().endswith(": fell behind 1 times, 0.492 s of probes not sent")


def test_the_achieved_rate_is_sends_over_their_span() -> None:
    from vhostlm.measure.probe import achieved_rate

    assert achieved_rate([]) == 0.0 and achieved_rate([5.0]) == 0.0
    assert achieved_rate([1.0 + i / 500 for i in range(1001)]) == pytest.approx(500.0)
