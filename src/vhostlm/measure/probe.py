"""The probe stream: sequence-numbered ICMP echo requests to the guest, every reply timed.

Run on the tester (copied there by `Tester`) as `python probe.py`. scapy builds the
frame once; each probe gets its 64-bit sequence number in the payload (ICMP's own 16-bit
sequence wraps after a minute at 1000 pps) and is sent on a raw AF_PACKET socket, paced
in small batches so the rate holds at thousands per second. A receive thread stamps every
echo reply carrying the magic. On SIGTERM it writes all send and reply times as JSON.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import struct
import sys
import threading
import time
from array import array
from pathlib import Path
from types import FrameType

MAGIC = b"VHLP"
ETH_P_ALL = 0x0003
IP_OFF = 14
ICMP_OFF = IP_OFF + 20
DATA_OFF = ICMP_OFF + 8
SEQ_OFF = DATA_OFF + len(MAGIC)
ECHO_REQUEST, ECHO_REPLY = 8, 0


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def build_template(dst_mac: str, src_mac: str, src_ip: str, dst_ip: str, size: int = 64) -> bytes:
    """An echo request frame from the tester to the guest, sequence number 0."""
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    payload = MAGIC + struct.pack("!Q", 0)
    payload += b"p" * max(0, size - DATA_OFF - len(payload))
    frame = (
        Ether(dst=dst_mac, src=src_mac)
        / IP(src=src_ip, dst=dst_ip, ttl=64)
        / ICMP(type=ECHO_REQUEST, id=0x7668, seq=0)
        / Raw(payload)
    )
    return bytes(frame)


def stamp(template: bytes, seq: int) -> bytes:
    """The template carrying `seq`, with its ICMP checksum recomputed."""
    icmp = bytearray(template[ICMP_OFF:])
    struct.pack_into("!Q", icmp, SEQ_OFF - ICMP_OFF, seq)
    struct.pack_into("!H", icmp, 6, seq & 0xFFFF)
    struct.pack_into("!H", icmp, 2, 0)
    struct.pack_into("!H", icmp, 2, checksum(bytes(icmp)))
    return template[:ICMP_OFF] + bytes(icmp)


def reply_seq(frame: bytes) -> int | None:
    """The probe sequence number of an echo reply built from our request, else None."""
    if len(frame) < SEQ_OFF + 8 or frame[12:14] != b"\x08\x00" or frame[IP_OFF + 9] != 1:
        return None
    ihl = (frame[IP_OFF] & 0x0F) * 4
    icmp = IP_OFF + ihl
    if frame[icmp] != ECHO_REPLY or frame[icmp + 8 : icmp + 12] != MAGIC:
        return None
    return int(struct.unpack_from("!Q", frame, icmp + 12)[0])


class ProbeRun:
    """Sender and receiver of one probe stream, with everything they saw."""

    def __init__(self, iface: str, template: bytes, pps: float) -> None:
        self.template = template
        self.pps = pps
        self.send_ts = array("d")
        self.reply_seq = array("q")
        self.reply_ts = array("d")
        # two flags: SIGTERM ends the sending only; one shared flag let the receive thread
        # see it first and quit, so the replies still in flight were counted as lost
        self.sending = True
        self.receiving = True
        self.tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self.tx.bind((iface, 0))
        self.rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.rx.bind((iface, 0))
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.rx.settimeout(0.2)

    def receive(self) -> None:
        """Stamp every echo reply until stopped (runs in its own thread)."""
        while self.receiving:
            try:
                frame, addr = self.rx.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                break
            now = time.time()
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            seq = reply_seq(frame)
            if seq is not None:
                self.reply_seq.append(seq)
                self.reply_ts.append(now)

    def send(self, count: int) -> None:
        """Send at `pps` in small batches until stopped (or `count` probes)."""
        start = time.monotonic()
        last_report = start
        while self.sending and (count == 0 or len(self.send_ts) < count):
            due = int((time.monotonic() - start) * self.pps) + 1
            if count:
                due = min(due, count)
            while len(self.send_ts) < due:
                seq = len(self.send_ts)
                self.tx.send(stamp(self.template, seq))
                self.send_ts.append(time.time())
            now = time.monotonic()
            if now - last_report >= 0.1:
                print(f"sent {len(self.send_ts)} replies {len(self.reply_ts)}", flush=True)
                last_report = now
            time.sleep(min(0.001, max(0.0, start + due / self.pps - time.monotonic())))

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
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)


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
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    src_mac = Path(f"/sys/class/net/{args.iface}/address").read_text().strip()
    run = ProbeRun(
        args.iface, build_template(args.dst_mac, src_mac, args.src_ip, args.dst_ip), args.pps
    )

    def stop(_sig: int, _frame: FrameType | None) -> None:
        run.sending = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    receiver = threading.Thread(target=run.receive, daemon=True)
    receiver.start()
    print(f"probing {args.dst_ip} ({args.dst_mac}) on {args.iface} at {args.pps:g} pps", flush=True)
    run.send(args.count)
    run.drain(0.5)
    run.receiving = False
    receiver.join(1)
    run.dump(args.out)
    print(f"total sent {len(run.send_ts)} replies {len(run.reply_ts)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
