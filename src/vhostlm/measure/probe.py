"""The probe stream: sequence-numbered ICMP echo requests to the guest, every reply timed
and its payload verified.

Run on the tester (copied there by `Tester`) as `python probe.py`: stdlib only, scapy
for the template. scapy builds the frame once; each probe gets its 64-bit sequence
number in the payload (ICMP's own 16-bit sequence wraps after a minute at 1000 pps),
then a body derived from that number, and is sent on a raw AF_PACKET socket, paced in
small batches so the rate holds at thousands per second. A receive thread takes every
echo reply carrying the magic and checks its payload against its own sequence number:
vhost-user migration's real bugs are guest pages the backend wrote but nobody marked
dirty, and a reply echoed from such a stale receive buffer carries the wrong bytes. On
SIGTERM it writes all send and reply times and the payload findings as JSON.

Clocks: a reply's time is the kernel's receive stamp (SO_TIMESTAMPNS, CLOCK_REALTIME,
taken when the frame reached the tester's interface), so a stalled receive thread does not
read as a gap in the guest's replies; the user-space read time is kept beside it (the
receive lag). A send time is time.time() right after send() returns (an AF_PACKET send on a
veth or NIC queue returns once the frame is handed to the driver). The kernel drops of the
receive socket (PACKET_STATISTICS) are polled every 0.1 s and dumped with when they
happened: a dropped reply is the tester's loss, never the guest's. The socket's copies of
our own requests are dropped in the kernel (PACKET_IGNORE_OUTGOING, Linux 4.20), else by
their packet type.

Payload (the ICMP data) of probe S, `size` bytes of frame in all:

    MAGIC (4) | S (8, big endian) | w_0 | w_1 | ... | a prefix of w_n

with body words w_j = mix(S) ^ mask_j (64-bit, big endian): mix is a bijection of 64-bit
integers with full avalanche and mask_j a fixed per-offset constant, so the sequence
number is recovered from any single word (unmix(w_j ^ mask_j)), a flipped byte decodes to
a random number (never a probe sent), and a word left over from probe T decodes to T.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from array import array
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from types import FrameType
from typing import Any

MAGIC = b"VHLP"
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6  # struct tpacket_stats {unsigned tp_packets, tp_drops}; reset on read
PACKET_IGNORE_OUTGOING = 23  # Linux >= 4.20
SO_TIMESTAMPNS = 35  # SO_TIMESTAMPNS_OLD; its control message, SCM_TIMESTAMPNS, is the same
SO_RCVBUFFORCE = 33  # root may go past net.core.rmem_max
RCVBUF = 8 << 20
ANC_SPACE = socket.CMSG_SPACE(16)  # one struct timespec of two 64-bit fields
STATS_EVERY_S = 0.1
IP_OFF = 14
ICMP_OFF = IP_OFF + 20
DATA_OFF = ICMP_OFF + 8
SEQ_OFF = DATA_OFF + len(MAGIC)
BODY_OFF = SEQ_OFF + 8  # 54: the first body word, in the frame as sent
WORD = 8
MIN_SIZE = BODY_OFF + WORD  # headers, magic, sequence number and one body word
MAX_SIZE = 14 + 1500  # an Ethernet frame at the usual 1500-byte MTU
DEFAULT_SIZE = 256  # more than one cache line
ECHO_REQUEST, ECHO_REPLY = 8, 0
ICMP_ID = 0x7668
MAX_SAMPLES = 8
SAMPLE_BYTES = 8  # bytes of hex in a sample's expected/seen
FOREIGN_TRIES = 4  # differing body words decoded to look for another probe's

M64 = (1 << 64) - 1
_C1, _C2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB  # splitmix64's finaliser
_C1_INV, _C2_INV = pow(_C1, -1, 1 << 64), pow(_C2, -1, 1 << 64)


def mix(x: int) -> int:
    """splitmix64's finaliser: a bijection of 64-bit integers in which every input bit
    flips about half the output bits (so a damaged word never decodes to a near seq)."""
    x ^= x >> 30
    x = (x * _C1) & M64
    x ^= x >> 27
    x = (x * _C2) & M64
    return x ^ (x >> 31)


def unmix(x: int) -> int:
    """The inverse of `mix`: the sequence number a body word (unmasked) came from."""
    x ^= (x >> 31) ^ (x >> 62)
    x = (x * _C2_INV) & M64
    x ^= (x >> 27) ^ (x >> 54)
    x = (x * _C1_INV) & M64
    return x ^ (x >> 30) ^ (x >> 60)


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`.

    The ones'-complement sum of 16-bit words is the number mod 0xFFFF (2**16 = 1 mod
    0xFFFF), which CPython's big integers compute in C: fast enough for 1514-byte frames
    at 10,000 pps."""
    if len(data) % 2:
        data += b"\0"
    total = int.from_bytes(data, "big")
    folded = total % 0xFFFF
    if folded == 0 and total:
        folded = 0xFFFF  # a nonzero sum folds to ones'-complement "negative zero"
    return ~folded & 0xFFFF


def check_size(size: int) -> str | None:
    """Why a probe of `size` frame bytes cannot be built, or None when it can."""
    if size < MIN_SIZE:
        return (
            f"--probe-size {size} is below the probe's {MIN_SIZE}-byte minimum ({BODY_OFF} "
            f"bytes of headers, magic and sequence number, then one {WORD}-byte payload word):"
            f" use {MIN_SIZE}..{MAX_SIZE}"
        )
    if size > MAX_SIZE:
        return (
            f"--probe-size {size} is above the {MAX_SIZE}-byte frame of a 1500-byte MTU: "
            f"use {MIN_SIZE}..{MAX_SIZE}"
        )
    return None


class Payload:
    """The ICMP data of every probe of one frame size: built, and checked against a seq.

    `data(seq)` is what probe `seq` carries from the magic on; `region(seq)` is what the
    receiver compares, the ICMP id and sequence fields (echoed unchanged) then the data."""

    def __init__(self, size: int) -> None:
        reason = check_size(size)
        if reason is not None:
            raise ValueError(reason)
        self.size = size
        self.data_len = size - DATA_OFF
        self.body_len = size - BODY_OFF
        self.words = -(-self.body_len // WORD)  # with a partial word at the end
        self.full_words = self.body_len // WORD
        self.masks = [mix(j + 0x5648_4C50_0000_0000) for j in range(self.words)]
        self.mask_int = int.from_bytes(b"".join(struct.pack("!Q", m) for m in self.masks))

    def body(self, seq: int) -> bytes:
        """The body words of probe `seq` (one mix, then C-level big-integer work)."""
        rep = int.from_bytes(struct.pack("!Q", mix(seq & M64)) * self.words)
        return (rep ^ self.mask_int).to_bytes(self.words * WORD)[: self.body_len]

    def data(self, seq: int) -> bytes:
        """The ICMP data of probe `seq`: magic, sequence number, body."""
        return MAGIC + struct.pack("!Q", seq) + self.body(seq)

    def region(self, seq: int) -> bytes:
        """The bytes a reply to probe `seq` must carry from its ICMP id field on."""
        return struct.pack("!HH", ICMP_ID, seq & 0xFFFF) + self.data(seq)

    def word_seq(self, word: bytes, j: int) -> int:
        """The sequence number whose body word `j` is `word`."""
        return unmix(int.from_bytes(word) ^ self.masks[j])


# where the compared region starts in the frame as sent (ICMP id), and its body words
REGION_OFF = ICMP_OFF + 4
BODY_IN_REGION = BODY_OFF - REGION_OFF


@lru_cache(maxsize=8)
def payload_for(size: int) -> Payload:
    """The `Payload` of frames of `size` bytes (built once per size)."""
    return Payload(size)


def build_template(
    dst_mac: str, src_mac: str, src_ip: str, dst_ip: str, size: int = DEFAULT_SIZE
) -> bytes:
    """An echo request frame of `size` bytes from the tester to the guest, probe 0."""
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    frame = (
        Ether(dst=dst_mac, src=src_mac)
        / IP(src=src_ip, dst=dst_ip, ttl=64)
        / ICMP(type=ECHO_REQUEST, id=ICMP_ID, seq=0)
        / Raw(payload_for(size).data(0))
    )
    return bytes(frame)


ETH_P_ARP = 0x0806
ARP_REPLY = 2
PRIME_S = 1.0  # how long the tester waits for the guest's answer to its ARP request
PRIME_EVERY_S = 0.1  # the request is sent again this often until answered


def build_arp_request(dst_mac: str, src_mac: str, src_ip: str, dst_ip: str) -> bytes:
    """ "Who has the guest's address? Tell the tester", sent to the guest's MAC.

    The target of an ARP request learns its sender (Linux: neigh_event_ns, a STALE entry,
    used at once). Without it the guest's first echo replies wait in its neighbour queue
    while it resolves the tester, and under load (two runs on 2 cores) that queue
    (unres_qlen_bytes) overflowed: tens of probes lost 0.1 s into the stream, before any
    migration, counted as unexplained loss."""
    from scapy.layers.l2 import ARP, Ether

    return bytes(
        Ether(dst=dst_mac, src=src_mac)
        / ARP(op=1, hwsrc=src_mac, psrc=src_ip, hwdst="00:00:00:00:00:00", pdst=dst_ip)
    )


def is_arp_reply_from(frame: bytes, ip: str) -> bool:
    """`frame` is an ARP reply whose sender is `ip` (the guest answering the request)."""
    if len(frame) < 42 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_ARP:
        return False
    op = struct.unpack_from("!H", frame, 20)[0]
    return op == ARP_REPLY and frame[28:32] == socket.inet_aton(ip)


def stamp(template: bytes, seq: int) -> bytes:
    """The template as probe `seq`: its payload and ICMP sequence, checksum recomputed."""
    icmp = bytearray(template[ICMP_OFF:DATA_OFF])
    struct.pack_into("!H", icmp, 2, 0)
    struct.pack_into("!H", icmp, 6, seq & 0xFFFF)
    data = payload_for(len(template)).data(seq)
    struct.pack_into("!H", icmp, 2, checksum(bytes(icmp) + data))
    return template[:ICMP_OFF] + bytes(icmp) + data


def parse_reply(frame: bytes) -> tuple[int, int] | None:
    """(probe sequence number, offset of the ICMP header) of an echo reply built from our
    request, else None. The IP header's length is read, not assumed."""
    if len(frame) < SEQ_OFF + 8 or frame[12:14] != b"\x08\x00" or frame[IP_OFF + 9] != 1:
        return None
    icmp = IP_OFF + (frame[IP_OFF] & 0x0F) * 4
    if len(frame) < icmp + 20 or frame[icmp] != ECHO_REPLY:
        return None
    if frame[icmp + 8 : icmp + 12] != MAGIC:
        return None
    return int(struct.unpack_from("!Q", frame, icmp + 12)[0]), icmp


def reply_seq(frame: bytes) -> int | None:
    """The probe sequence number of an echo reply built from our request, else None."""
    parsed = parse_reply(frame)
    return None if parsed is None else parsed[0]


class PayloadCheck:
    """Verifies every reply's payload against its own sequence number and keeps count.

    Each checked reply is good or exactly one of: "foreign" (a body word is another
    probe's: a stale receive buffer), "corrupt" (bytes that are no probe's), "truncated"
    (shorter than sent, the bytes it has being right). Offsets are in the frame as sent
    (Ethernet header first, 20-byte IP header). The first MAX_SAMPLES findings are kept:
    {seq, kind, offset, expected, seen (hex of up to 8 bytes from offset), other_seq (the
    other probe, foreign only), length (the reply's), icmp_checksum_ok}.
    A duplicate with the right payload is fine here (outage.py counts duplicates)."""

    def __init__(self, size: int) -> None:
        self.payload = payload_for(size)
        self.checked = self.corrupt = self.foreign = self.truncated = 0
        self.samples: list[dict[str, Any]] = []
        self._last_seq = -1
        self._last_region = b""

    def check(self, frame: bytes, icmp: int, seq: int, limit: int) -> str | None:
        """The finding of a reply to probe `seq` (ICMP header at `icmp`), None if good.

        `limit`: probes sent so far; only a number below it is taken for another probe's."""
        self.checked += 1
        if seq != self._last_seq:  # a duplicate reuses the expected bytes
            self._last_seq, self._last_region = seq, self.payload.region(seq)
        expected = self._last_region
        ip_end = IP_OFF + int.from_bytes(frame[IP_OFF + 2 : IP_OFF + 4])
        seen = frame[icmp + 4 : min(len(frame), ip_end)]
        if seen[: len(expected)] == expected:
            return None
        if len(seen) < len(expected) and expected.startswith(seen):
            self.truncated += 1
            self._sample("truncated", seq, len(seen), expected, seen, None, frame, icmp)
            return "truncated"
        return self._diagnose(seq, seen, expected, limit, frame, icmp)

    def _diagnose(
        self, seq: int, seen: bytes, expected: bytes, limit: int, frame: bytes, icmp: int
    ) -> str:
        """Where and how a mismatching reply differs (the slow path, mismatches only)."""
        n = min(len(seen), len(expected))
        diff = int.from_bytes(seen[:n]) ^ int.from_bytes(expected[:n])
        first = n - (diff.bit_length() + 7) // 8  # the first differing byte
        # decode the first few differing words from there: the first may be torn (a cache
        # line boundary inside it), the next one wholly another probe's
        diffs = diff.to_bytes(n)
        at = first
        for _ in range(FOREIGN_TRIES):
            j = max(0, (at - BODY_IN_REGION) // WORD)
            at = BODY_IN_REGION + j * WORD
            if j >= self.payload.full_words or at + WORD > n:
                break
            other = self.payload.word_seq(seen[at : at + WORD], j)
            if 0 <= other < limit and other != seq:
                self.foreign += 1
                self._sample("foreign", seq, at, expected, seen, other, frame, icmp)
                return "foreign"
            rest = diffs[at + WORD :].lstrip(b"\0")  # on to the next differing byte
            if not rest:
                break
            at = n - len(rest)
        self.corrupt += 1
        self._sample("corrupt", seq, first, expected, seen, None, frame, icmp)
        return "corrupt"

    def _sample(
        self, kind: str, seq: int, at: int, expected: bytes, seen: bytes, other: int | None,
        frame: bytes, icmp: int,
    ) -> None:  # fmt: skip
        if len(self.samples) >= MAX_SAMPLES:
            return
        ip_end = min(len(frame), IP_OFF + int.from_bytes(frame[IP_OFF + 2 : IP_OFF + 4]))
        self.samples.append({
            "seq": seq,
            "kind": kind,
            "offset": REGION_OFF + at,
            "expected": expected[at : at + SAMPLE_BYTES].hex(),
            "seen": seen[at : at + SAMPLE_BYTES].hex(),
            "other_seq": other,
            "length": REGION_OFF + len(seen),  # the reply's, in the frame as sent
            "icmp_checksum_ok": checksum(frame[icmp:ip_end]) == 0,
        })  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the JSON dump."""
        return {
            "size": self.payload.size,
            "checked": self.checked,
            "corrupt": self.corrupt,
            "foreign": self.foreign,
            "truncated": self.truncated,
            "samples": list(self.samples),
        }


def cmsg_time(ancdata: list[tuple[int, int, bytes]]) -> float | None:
    """The kernel's receive stamp (epoch seconds) in recvmsg's ancillary data, or None.

    SCM_TIMESTAMPNS carries a struct timespec {tv_sec; tv_nsec} of two C longs: 16 bytes
    on a 64-bit kernel, 8 on a 32-bit one (SO_TIMESTAMPNS_OLD)."""
    for level, kind, data in ancdata:
        if level != socket.SOL_SOCKET or kind != SO_TIMESTAMPNS:
            continue
        if len(data) >= 16:
            sec, nsec = struct.unpack_from("=qq", data)
        elif len(data) >= 8:
            sec, nsec = struct.unpack_from("=ii", data)
        else:
            continue
        return float(sec) + float(nsec) / 1e9
    return None


def open_rx(iface: str) -> tuple[socket.socket, dict[str, Any]]:
    """The receive socket on `iface`, kernel-stamped, and what it could be given.

    {"clock": "kernel" | "user", "ignore_outgoing": bool, "rcvbuf": bytes}: a kernel
    without SO_TIMESTAMPNS leaves the user-space read time as the reply's, one without
    PACKET_IGNORE_OUTGOING our own requests to be dropped by their packet type."""
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    info: dict[str, Any] = {"clock": "kernel", "ignore_outgoing": True}
    try:
        rx.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    except OSError:
        info["ignore_outgoing"] = False
    try:
        rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    except OSError:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    info["rcvbuf"] = rx.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    try:
        rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        info["clock"] = "user"
    rx.bind((iface, 0))
    rx.settimeout(0.2)
    return rx, info


def read_stats(sock: socket.socket) -> tuple[int, int]:
    """(packets, drops) of an AF_PACKET socket since the last read (the kernel resets them):
    packets counts the dropped ones too."""
    raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
    packets, drops = struct.unpack("=II", raw)
    return int(packets), int(drops)


MAX_BURST = 8  # probes sent back to back at most, when the sender is behind its schedule
MAX_BEHIND_LOG = 50  # catch-ups logged with their time (all are counted)
NICE = -10  # the tester's scheduling priority, when it may raise it (root)
# How long a thread may hold the GIL while another waits for it (CPython's default 5 ms):
# the receive thread, taking a burst of replies, held the sender off for up to that long.
SWITCH_INTERVAL_S = 0.0002


def achieved_rate(send_ts: Sequence[float]) -> float:
    """Probes per second actually sent: (sends - 1) over the first to the last send."""
    if len(send_ts) < 2 or send_ts[-1] <= send_ts[0]:
        return 0.0
    return (len(send_ts) - 1) / (send_ts[-1] - send_ts[0])


class ProbeRun:
    """Sender and receiver of one probe stream, with everything they saw."""

    def __init__(self, iface: str, template: bytes, pps: float) -> None:
        self.init_state(template, pps)
        self.tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self.tx.bind((iface, 0))
        self.rx, info = open_rx(iface)
        self.rx_info.update(info)
        self.poll_stats()  # from zero: the socket may have queued frames before the bind

    def init_state(self, template: bytes, pps: float) -> None:
        """Everything but the sockets (so tests can drive the receive side alone)."""
        self.template = template
        self.pps = pps
        self.send_ts = array("d")
        self.reply_seq = array("q")
        self.reply_ts = array("d")
        self.read_lag = array("d")  # user-space read time - reply time, per reply (s)
        self.payload = PayloadCheck(len(template))
        # what the receive socket told: empty without one (a test driving on_frame alone)
        self.rx_info: dict[str, Any] = {}
        self.unstamped = 0  # replies without a kernel stamp (timed at the read)
        self.packets = self.drops = 0
        self.drop_log: list[list[float]] = []  # [since, until, drops]: found by a poll
        # the sender fell behind its schedule by more than MAX_BURST probes and went on
        # from there: how often, the probe time it gave up in all, the first few [at, s]
        self.behind_count = 0
        self.behind_s = 0.0
        self.behind_log: list[list[float]] = []
        self._polled = 0.0
        # two flags: SIGTERM ends the sending only; one shared flag let the receive thread
        # see it first and quit, so the replies still in flight were counted as lost
        self.sending = True
        self.receiving = True

    def on_frame(self, frame: bytes, now: float, read: float | None = None) -> int | None:
        """Take one received frame (that reached us at `now`, was read at `read`): a probe
        reply is recorded and its payload checked. Returns the reply's sequence number,
        None for any other frame."""
        parsed = parse_reply(frame)
        if parsed is None:
            return None
        seq, icmp = parsed
        # +1: a reply may beat the sender's append of its own send time
        self.payload.check(frame, icmp, seq, len(self.send_ts) + 1)
        self.reply_seq.append(seq)
        self.reply_ts.append(now)
        self.read_lag.append(0.0 if read is None else read - now)
        return seq

    def prime(self, request: bytes, guest_ip: str) -> float | None:
        """Send the ARP request (`build_arp_request`) until the guest answers, at most
        PRIME_S, before the stream starts (the receive thread is not running yet); the
        seconds it took, None without an answer (a guest that answers no ARP)."""
        start = time.monotonic()
        sent_at = -PRIME_EVERY_S
        while (now := time.monotonic() - start) < PRIME_S:
            if now - sent_at >= PRIME_EVERY_S:
                self.tx.send(request)
                sent_at = now
            self.rx.settimeout(max(0.001, min(PRIME_EVERY_S, PRIME_S - now)))
            try:
                frame = self.rx.recv(2048)
            except TimeoutError:
                continue
            if is_arp_reply_from(frame, guest_ip):
                self.rx.settimeout(0.2)
                return time.monotonic() - start
        self.rx.settimeout(0.2)
        return None

    def receive(self) -> None:
        """Take every echo reply until stopped (runs in its own thread), at the kernel's
        receive stamp when there is one."""
        while self.receiving:
            try:
                frame, anc, _flags, addr = self.rx.recvmsg(2048, ANC_SPACE)
            except TimeoutError:
                continue
            except OSError:
                break
            read = time.time()
            if addr[2] == socket.PACKET_OUTGOING:  # a kernel without PACKET_IGNORE_OUTGOING
                continue
            kernel = cmsg_time(anc)
            seq = self.on_frame(frame, read if kernel is None else kernel, read)
            if kernel is None and seq is not None:
                self.unstamped += 1  # timed at the read: a receive stall shows in it

    def poll_stats(self) -> None:
        """Add the receive socket's kernel counters since the last poll; drops are logged
        with the span they happened in."""
        now = time.time()
        packets, drops = read_stats(self.rx)
        self.packets += packets
        self.drops += drops
        if drops and self._polled:
            self.drop_log.append([self._polled, now, drops])
        self._polled = now

    def send(self, count: int) -> None:
        """Send at `pps` in small batches until stopped (or `count` probes)."""
        start = time.monotonic()
        last_report = start
        while self.sending and (count == 0 or len(self.send_ts) < count):
            due = int((time.monotonic() - start) * self.pps) + 1
            if due - len(self.send_ts) > MAX_BURST:
                # the tester itself stalled: going on from now keeps the stream steady (the
                # stall shows as a send gap); catching up sent hundreds of probes at once,
                # more than the path queues, and they were lost as if the guest had dropped them
                skipped = (due - len(self.send_ts) - MAX_BURST) / self.pps
                start += skipped
                due = len(self.send_ts) + MAX_BURST
                self.fell_behind(skipped)
            if count:
                due = min(due, count)
            while len(self.send_ts) < due:
                seq = len(self.send_ts)
                self.tx.send(stamp(self.template, seq))
                self.send_ts.append(time.time())
            now = time.monotonic()
            if now - last_report >= STATS_EVERY_S:
                self.poll_stats()
                print(f"sent {len(self.send_ts)} replies {len(self.reply_ts)}", flush=True)
                last_report = now
            time.sleep(min(0.001, max(0.0, start + due / self.pps - time.monotonic())))

    def fell_behind(self, skipped: float) -> None:
        """Count one catch-up of the sender: `skipped` s of probes it will never send."""
        self.behind_count += 1
        self.behind_s += skipped
        if len(self.behind_log) < MAX_BEHIND_LOG:
            self.behind_log.append([time.time(), round(skipped, 6)])

    def rate_line(self) -> str:
        """The rate asked and achieved, and how far the sender fell behind, in words."""
        line = f"rate asked {self.pps:g} achieved {achieved_rate(self.send_ts):.1f} probes/s"
        if self.behind_count:
            line += (
                f": fell behind {self.behind_count} times, {self.behind_s:.3f} s of probes not sent"
            )
        return line

    def drain(self, grace: float) -> None:
        """After the last probe, give in-flight replies up to `grace` s to arrive."""
        deadline = time.monotonic() + grace
        last = len(self.send_ts) - 1
        while time.monotonic() < deadline and (not self.reply_seq or self.reply_seq[-1] < last):
            time.sleep(0.01)

    def dump(self, path: Path) -> None:
        """Write everything seen as JSON (written to a temp file, then renamed)."""
        data = {
            "pps": self.pps,
            "t0": self.send_ts[0] if self.send_ts else 0.0,
            "sent": len(self.send_ts),
            "send_ts": list(self.send_ts),
            "replies": [[s, t] for s, t in zip(self.reply_seq, self.reply_ts, strict=False)],
            "payload": self.payload.as_dict(),
            "achieved_pps": round(achieved_rate(self.send_ts), 3),
            "behind": {
                "count": self.behind_count,
                "skipped_s": round(self.behind_s, 6),
                "log": self.behind_log,
            },
        }
        if self.rx_info:  # what the receive socket said (there was one)
            clock = self.rx_info.get("clock", "user")
            if self.unstamped:
                clock = "user" if self.unstamped == len(self.reply_ts) else "mixed"
            data["rx"] = {
                **self.rx_info,
                "clock": clock,
                "send_clock": "user: time.time() right after send()",
                "unstamped": self.unstamped,
                "packets": self.packets,
                "drops": self.drops,
                "drop_log": self.drop_log,
                "read_lag_ms": [round(lag * 1000, 3) for lag in self.read_lag],
            }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)


def raise_priority() -> int:
    """Run at NICE (before any thread starts: threads inherit it); the niceness had.

    The tester is the measuring instrument: in the embedded lab it shares the machine's
    cores with two busy-polling testpmds and the guests' TCG vCPUs, which starved it to
    60 % of a 10,000 probes/s rate (its stalls then read as send gaps): its threads were
    runnable but waiting for a CPU half the time. Each lab process runs in its own session,
    and with autogroup scheduling (kernel.sched_autogroup_enabled) CPU time is shared
    between sessions first: a nice value counts only inside the session, so the session's
    own (/proc/self/autogroup) is raised too."""
    with contextlib.suppress(OSError):  # not root: the default priority, reported
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
    with contextlib.suppress(OSError):  # no autogroup scheduling (or not root)
        Path("/proc/self/autogroup").write_text(f"{NICE}\n")
    return os.getpriority(os.PRIO_PROCESS, 0)


def main(argv: list[str] | None = None) -> int:
    """Probe until SIGTERM/SIGINT (or --count), then write --out."""
    parser = argparse.ArgumentParser(prog="probe.py")
    parser.add_argument("--iface", required=True)
    parser.add_argument("--dst-mac", required=True)
    parser.add_argument("--src-ip", required=True)
    parser.add_argument("--dst-ip", required=True)
    # no default: this script runs alone on the tester; `Tester` passes the run's rate
    parser.add_argument("--pps", type=float, required=True)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="frame bytes")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    reason = check_size(args.size)
    if reason is not None:
        parser.error(reason)

    src_mac = Path(f"/sys/class/net/{args.iface}/address").read_text().strip()
    template = build_template(args.dst_mac, src_mac, args.src_ip, args.dst_ip, args.size)
    run = ProbeRun(args.iface, template, args.pps)
    run.rx_info["nice"] = raise_priority()
    sys.setswitchinterval(SWITCH_INTERVAL_S)

    def stop(_sig: int, _frame: FrameType | None) -> None:
        run.sending = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    request = build_arp_request(args.dst_mac, src_mac, args.src_ip, args.dst_ip)
    primed = run.prime(request, args.dst_ip)
    run.rx_info["arp_primed_ms"] = None if primed is None else round(primed * 1000, 3)
    print(
        f"the guest answered the tester's ARP request in {primed * 1000:.1f} ms"
        if primed is not None
        else f"no ARP answer from {args.dst_ip} in {PRIME_S:g} s: probing anyway",
        flush=True,
    )
    receiver = threading.Thread(target=run.receive, daemon=True)
    receiver.start()
    print(
        f"probing {args.dst_ip} ({args.dst_mac}) on {args.iface} at {args.pps:g} pps, "
        f"{args.size}-byte frames",
        flush=True,
    )
    run.send(args.count)
    run.drain(0.5)
    run.receiving = False
    receiver.join(1)
    run.poll_stats()
    run.dump(args.out)
    p = run.payload
    print(f"total sent {len(run.send_ts)} replies {len(run.reply_ts)}", flush=True)
    print(run.rate_line(), flush=True)
    print(
        f"receive socket packets {run.packets} drops {run.drops} "
        f"clock {run.rx_info.get('clock')} unstamped {run.unstamped} "
        f"ignore_outgoing {run.rx_info.get('ignore_outgoing')}",
        flush=True,
    )
    print(
        f"payload checked {p.checked} corrupt {p.corrupt} foreign {p.foreign} "
        f"truncated {p.truncated}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
