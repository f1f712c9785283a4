"""Probe frames, reply parsing, announce parsing, what the sniffer watches, the pass criteria."""

from __future__ import annotations

import queue
import socket
import threading
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether

from vhostlm.addresses import GUEST_IP, GUEST_MAC, TESTER_IP
from vhostlm.errors import StepFailed
from vhostlm.measure.announce import first_announcement, parse_announcements
from vhostlm.measure.probe import ProbeRun, build_template, payload_for, reply_seq, stamp
from vhostlm.plans.env import RunOptions
from vhostlm.plans.traffic import Traffic, check_limits
from vhostlm.testbed.topology import Nic, Tools

TEMPLATE = build_template(GUEST_MAC, "02:00:00:00:00:03", TESTER_IP, GUEST_IP)


def as_reply(frame: bytes) -> bytes:
    """What the guest sends back: addresses swapped, type 0, checksum fixed."""
    pkt = Ether(frame)
    pkt[Ether].src, pkt[Ether].dst = pkt[Ether].dst, pkt[Ether].src
    pkt[IP].src, pkt[IP].dst = pkt[IP].dst, pkt[IP].src
    pkt[ICMP].type = 0
    del pkt[ICMP].chksum
    del pkt[IP].chksum
    return bytes(pkt)


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


class FakeRx:
    """A receive socket fed by the test: frames from a queue, TimeoutError when idle."""

    def __init__(self) -> None:
        self.frames: queue.Queue[bytes] = queue.Queue()
        self.seen = threading.Semaphore(0)

    def recvfrom(self, _size: int) -> tuple[bytes, tuple[str, int, int]]:
        try:
            frame = self.frames.get(timeout=0.05)
        except queue.Empty:
            raise TimeoutError from None
        self.seen.release()
        return frame, ("veth", 0x0800, socket.PACKET_HOST)


def test_stopping_the_sender_keeps_the_receiver_for_replies_in_flight() -> None:
    run = ProbeRun.__new__(ProbeRun)  # no AF_PACKET sockets: the receive loop alone
    run.init_state(TEMPLATE, 1000)
    run.send_ts.extend([0.0] * 9)
    rx = FakeRx()
    run.rx = rx  # type: ignore[assignment]
    thread = threading.Thread(target=run.receive, daemon=True)
    thread.start()
    rx.frames.put(as_reply(stamp(TEMPLATE, 7)))
    assert rx.seen.acquire(timeout=5)
    run.sending = False  # what SIGTERM does: the last probes are still on their way back
    rx.frames.put(as_reply(stamp(TEMPLATE, 8)))
    assert rx.seen.acquire(timeout=5)
    run.receiving = False  # what main() does after the drain
    thread.join(5)
    assert not thread.is_alive()
    assert list(run.reply_seq) == [7, 8]
    assert run.payload.as_dict()["checked"] == 2 and run.payload.as_dict()["corrupt"] == 0


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
        self.label = label
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
