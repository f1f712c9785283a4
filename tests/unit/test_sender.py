"""The tester's frame: the seed's Ether/IP/UDP/Raw with a sequence number."""

from __future__ import annotations

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from vhostlm.addresses import GUEST_MAC, SEED_DST_IP, TESTER_IP
from vhostlm.measure.sender import build_template, read_seq, stamp


def test_template_is_the_seed_frame() -> None:
    frame = Ether(build_template(GUEST_MAC, "02:00:00:00:00:09", TESTER_IP, SEED_DST_IP))
    assert frame.dst == GUEST_MAC and frame.src == "02:00:00:00:00:09"
    assert frame.haslayer(IP) and frame.haslayer(UDP)
    assert (frame[IP].src, frame[IP].dst) == ("198.18.1.3", "198.18.1.1")  # as before
    assert frame[UDP].chksum == 0


def test_stamp_and_read_back_sequence_numbers() -> None:
    template = build_template(GUEST_MAC, "02:00:00:00:00:09", TESTER_IP, SEED_DST_IP)
    for seq in (0, 1, 4096, 2**40 + 7):
        frame = stamp(template, seq)
        assert len(frame) == len(template)
        assert read_seq(frame) == seq
    assert read_seq(b"\x00" * 80) is None
