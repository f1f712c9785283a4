"""The tester's traffic: the seed's scapy frame, sent continuously with a sequence number.

Run on the tester (copied there by `Tester`) as `python sender.py`. scapy builds
`Ether(dst=...)/IP()/UDP()/Raw(...)` once; each frame carries its sequence number in the
payload and goes out on a raw AF_PACKET socket, so the rate does not hinge on scapy's
per-packet cost. It prints `sent N` lines while running and `total N` when stopped.
"""

from __future__ import annotations

import argparse
import signal
import socket
import struct
import sys
import time
from types import FrameType

MAGIC = b"VHLM"
SEQ_OFFSET = 14 + 20 + 8 + len(MAGIC)  # Ethernet + IPv4 + UDP headers, then magic


def build_template(dst: str, src: str, src_ip: str, dst_ip: str, size: int = 20) -> bytes:
    """The seed's frame, sequence number 0; UDP checksum 0 (none) so it can be patched."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    payload = MAGIC + struct.pack("!Q", 0) + b"x" * max(0, size - len(MAGIC) - 8)
    frame = (
        Ether(dst=dst, src=src)
        / IP(src=src_ip, dst=dst_ip)
        / UDP(sport=4000, dport=4001, chksum=0)
        / Raw(payload)
    )
    return bytes(frame)


def stamp(template: bytes, seq: int) -> bytes:
    """The template with sequence number `seq` written into its payload."""
    return template[:SEQ_OFFSET] + struct.pack("!Q", seq) + template[SEQ_OFFSET + 8 :]


def read_seq(frame: bytes) -> int | None:
    """The sequence number of a frame built by this module, or None."""
    if frame[SEQ_OFFSET - len(MAGIC) : SEQ_OFFSET] != MAGIC:
        return None
    return int(struct.unpack("!Q", frame[SEQ_OFFSET : SEQ_OFFSET + 8])[0])


def main(argv: list[str] | None = None) -> int:
    """Send until SIGTERM/SIGINT or --count; print progress and the total."""
    parser = argparse.ArgumentParser(prog="sender.py")
    parser.add_argument("--iface", required=True)
    parser.add_argument("--dst", required=True, help="destination MAC")
    parser.add_argument("--src-ip", required=True)
    parser.add_argument("--dst-ip", required=True)
    # no defaults: this script runs alone on the tester; `Tester` passes vhostlm.addresses'
    parser.add_argument("--pps", type=float, required=True)
    parser.add_argument("--count", type=int, default=0, help="0: until stopped")
    args = parser.parse_args(argv)

    with open(f"/sys/class/net/{args.iface}/address") as fh:
        src = fh.read().strip()
    template = build_template(args.dst, src, args.src_ip, args.dst_ip)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((args.iface, 0))

    running = True

    def stop(_sig: int, _frame: FrameType | None) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    interval = 1.0 / args.pps
    start = time.monotonic()
    sent = 0
    last_report = start
    print(f"sending to {args.dst} on {args.iface} at {args.pps:g} pps", flush=True)
    while running and (args.count == 0 or sent < args.count):
        sock.send(stamp(template, sent))
        sent += 1
        now = time.monotonic()
        if now - last_report >= 0.5:
            print(f"sent {sent}", flush=True)
            last_report = now
        delay = start + sent * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    print(f"total sent {sent}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
