"""Payload integrity of the probes: builder and verifier, the receive path, the figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, IPOption
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from vhostlm.addresses import GUEST_IP, GUEST_MAC, TESTER_IP
from vhostlm.errors import UsageError
from vhostlm.measure import probe, tester
from vhostlm.measure.payload import check_probe_size, payload_failure, payload_figures
from vhostlm.measure.probe import (
    MAX_SIZE,
    MIN_SIZE,
    ProbeRun,
    build_template,
    mix,
    payload_for,
    stamp,
    unmix,
)

TESTER_MAC = "02:00:00:00:00:03"


def template(size: int = 256) -> bytes:
    """The probe template of `size` frame bytes, as the tester builds it."""
    return build_template(GUEST_MAC, TESTER_MAC, TESTER_IP, GUEST_IP, size)


def icmpecho_reply(frame: bytes) -> bytes:
    """What testpmd's icmpecho sends back: addresses swapped, type 0, checksum fixed."""
    pkt = Ether(frame)
    pkt[Ether].src, pkt[Ether].dst = pkt[Ether].dst, pkt[Ether].src
    pkt[IP].src, pkt[IP].dst = pkt[IP].dst, pkt[IP].src
    pkt[ICMP].type = 0
    del pkt[ICMP].chksum
    del pkt[IP].chksum
    return bytes(pkt)


def kernel_reply(frame: bytes, options: bool = False) -> bytes:
    """What a Linux guest sends back: a new IP header (its own id, DF, ttl 64, with
    `options` a 24-byte header), the request's ICMP id, sequence and data."""
    req = Ether(frame)
    ip = IP(src=req[IP].dst, dst=req[IP].src, id=0xBEEF, ttl=64, flags="DF")
    if options:
        ip.options = [IPOption(b"\x01\x01\x01\x00")]  # NOP NOP NOP EOL: ihl 6
    echo = ICMP(type=0, id=req[ICMP].id, seq=req[ICMP].seq) / Raw(bytes(req[ICMP].payload))
    return bytes(Ether(src=req[Ether].dst, dst=req[Ether].src) / ip / echo)


def receiver(size: int = 256, sent: int = 5000) -> ProbeRun:
    """A ProbeRun without sockets that has sent `sent` probes: the receive side alone."""
    run = ProbeRun.__new__(ProbeRun)
    run.init_state(template(size), 1000)
    run.send_ts.extend([0.0] * sent)
    return run


def with_byte(frame: bytes, offset: int, value: int) -> bytes:
    """`frame` with the byte at `offset` set to `value`."""
    return frame[:offset] + bytes([value]) + frame[offset + 1 :]


def test_mix_is_a_bijection_and_unmix_its_inverse() -> None:
    for x in (0, 1, 2, 1234, 2**63, 2**64 - 1, 0x0123456789ABCDEF):
        assert unmix(mix(x)) == x
    assert mix(1000) ^ mix(1001) != 0 and bin(mix(1000) ^ mix(1001)).count("1") > 16


def test_a_correct_reply_and_a_duplicate_are_not_findings() -> None:
    run = receiver()
    reply = icmpecho_reply(stamp(run.template, 1234))
    assert run.on_frame(reply, 1.0) == 1234
    assert run.on_frame(reply, 1.1) == 1234  # a duplicate stays a duplicate (outage.py)
    assert run.on_frame(icmpecho_reply(stamp(run.template, 1235)), 1.2) == 1235
    found = run.payload.as_dict()
    assert found["checked"] == 3
    assert (found["corrupt"], found["foreign"], found["truncated"], found["samples"]) == (
        0, 0, 0, [],
    )  # fmt: skip
    assert list(run.reply_seq) == [1234, 1234, 1235]
    assert payload_failure(payload_figures({"payload": found})) is None


@pytest.mark.parametrize("offset", [38, 41, 54, 57, 64, 100, 255])
def test_a_flipped_byte_is_found_with_its_offset_and_values(offset: int) -> None:
    run = receiver()
    good = icmpecho_reply(stamp(run.template, 1234))
    value = good[offset] ^ 0x5A
    assert run.on_frame(with_byte(good, offset, value), 2.0) == 1234  # still a reply
    found = run.payload.as_dict()
    assert (found["checked"], found["corrupt"], found["foreign"]) == (1, 1, 0)
    sample = found["samples"][0]
    assert sample["kind"] == "corrupt" and sample["seq"] == 1234 and sample["offset"] == offset
    assert sample["expected"][:2] == f"{good[offset]:02x}" and sample["seen"][:2] == f"{value:02x}"
    assert sample["other_seq"] is None and sample["length"] == 256
    # testpmd's checksum covers the flipped byte, as it would have covered a stale one
    assert sample["icmp_checksum_ok"] is False
    reason = payload_failure(payload_figures({"payload": found}))
    assert reason is not None and reason.startswith(
        f"probe 1234's reply is corrupt at byte {offset}: expected 0x{good[offset]:02x} "
        f"seen 0x{value:02x}"
    )
    assert "1 of 1 replies checked are wrong" in reason


def test_a_zeroed_buffer_is_corrupt_not_another_probes() -> None:
    run = receiver()
    good = icmpecho_reply(stamp(run.template, 77))
    run.on_frame(good[:64] + bytes(len(good) - 64), 1.0)
    found = run.payload.as_dict()
    assert found["corrupt"] == 1 and found["samples"][0]["offset"] == 64


@pytest.mark.parametrize("cut", [54, 64, 120, 128, 200])
def test_another_probes_payload_is_foreign_with_its_seq(cut: int) -> None:
    # a stale receive buffer: the first `cut` bytes are probe 4321's, the rest probe 4200's
    run = receiver()
    new, old = (icmpecho_reply(stamp(run.template, s)) for s in (4321, 4200))
    run.on_frame(new[:cut] + old[cut:], 3.0)
    found = run.payload.as_dict()
    assert (found["checked"], found["foreign"], found["corrupt"]) == (1, 1, 0)
    sample = found["samples"][0]
    assert sample["kind"] == "foreign" and sample["seq"] == 4321 and sample["other_seq"] == 4200
    # the first whole word of the old probe (a word cut in two is torn, not decodable)
    assert sample["offset"] == 54 + -(-(cut - 54) // 8) * 8
    assert payload_failure(payload_figures({"payload": found})) == (
        f"probe 4321's reply carries probe 4200's payload from byte {sample['offset']} "
        "(a stale receive buffer); 1 of 1 replies checked are wrong: 1 another probe's "
        "payload, 0 corrupt, 0 truncated"
    )


def test_a_number_never_sent_is_not_taken_for_another_probe() -> None:
    run = receiver(sent=100)  # probe 4200 was never sent: its words are just wrong bytes
    new, old = (icmpecho_reply(stamp(run.template, s)) for s in (50, 4200))
    run.on_frame(new[:128] + old[128:], 3.0)
    assert run.payload.as_dict()["corrupt"] == 1


def test_a_newer_payload_behind_a_stale_header_is_foreign_too() -> None:
    # the header's cache line is old (probe 10), the rest already probe 11's
    run = receiver()
    old, new = (icmpecho_reply(stamp(run.template, s)) for s in (10, 11))
    assert run.on_frame(old[:64] + new[64:], 3.0) == 10
    assert run.payload.as_dict()["samples"][0]["other_seq"] == 11


def test_a_short_frame_is_truncated() -> None:
    run = receiver()
    good = icmpecho_reply(stamp(run.template, 9))
    run.on_frame(good[:200], 1.0)
    found = run.payload.as_dict()
    assert (found["truncated"], found["corrupt"], found["foreign"]) == (1, 0, 0)
    sample = found["samples"][0]
    assert sample["kind"] == "truncated" and sample["length"] == 200 and sample["seen"] == ""
    assert sample["expected"] == good[200:208].hex()
    reason = payload_failure(payload_figures({"payload": found}))
    assert reason is not None
    assert reason.startswith("probe 9's reply is truncated at byte 200 of 256;")


def test_a_reply_whose_ip_length_is_short_is_truncated_even_if_padded() -> None:
    # the guest echoed 100 bytes less; what follows the IP packet is padding, not payload
    run = receiver()
    pkt = Ether(icmpecho_reply(stamp(run.template, 9)))
    pkt[IP].len -= 100
    del pkt[IP].chksum
    frame = bytes(pkt)
    assert len(frame) == 256
    run.on_frame(frame, 1.0)
    assert run.payload.as_dict()["samples"][0]["length"] == 156


def test_a_truncated_reply_with_wrong_bytes_is_corrupt_once() -> None:
    run = receiver()
    good = icmpecho_reply(stamp(run.template, 9))
    run.on_frame(with_byte(good, 100, good[100] ^ 1)[:200], 1.0)
    found = run.payload.as_dict()
    assert (found["checked"], found["corrupt"], found["truncated"]) == (1, 1, 0)


@pytest.mark.parametrize("options", [False, True])
@pytest.mark.parametrize("size", [MIN_SIZE, 256, MAX_SIZE])
def test_a_kernel_echo_is_checked_whatever_its_ip_header(size: int, options: bool) -> None:
    run = receiver(size)
    reply = kernel_reply(stamp(run.template, 4242), options)
    assert Ether(reply)[IP].id == 0xBEEF and (Ether(reply)[IP].ihl == 6) is options
    assert run.on_frame(reply, 1.0) == 4242
    found = run.payload.as_dict()
    assert found["checked"] == 1 and found["samples"] == []
    # offsets are in the frame as sent, whatever the reply's IP header length
    icmp = 14 + Ether(reply)[IP].ihl * 4
    run.on_frame(with_byte(reply, icmp + 8 + 12, 0xEE ^ reply[icmp + 20]), 1.0)
    assert run.payload.as_dict()["samples"][0]["offset"] == 14 + 20 + 8 + 12


def test_a_reply_with_a_wrong_icmp_sequence_field_is_corrupt() -> None:
    run = receiver()
    pkt = Ether(icmpecho_reply(stamp(run.template, 70000)))
    pkt[ICMP].seq = 1
    del pkt[ICMP].chksum
    run.on_frame(bytes(pkt), 1.0)
    sample = run.payload.as_dict()["samples"][0]
    assert sample["kind"] == "corrupt" and sample["offset"] == 40  # ICMP sequence field


def test_other_frames_are_not_checked() -> None:
    run = receiver()
    assert run.on_frame(stamp(run.template, 3), 1.0) is None  # our own request
    other = bytes(Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / ICMP(type=0) / b"hello-world-xyz")
    assert run.on_frame(other, 1.0) is None
    assert run.on_frame(b"\x00" * 20, 1.0) is None
    assert run.payload.as_dict()["checked"] == 0


def test_only_the_first_samples_are_kept_but_all_are_counted() -> None:
    run = receiver()
    for seq in range(20):
        good = icmpecho_reply(stamp(run.template, seq))
        run.on_frame(with_byte(good, 80, good[80] ^ 0xFF), 1.0)
    found = run.payload.as_dict()
    assert found["corrupt"] == 20 and [s["seq"] for s in found["samples"]] == list(range(8))


def test_the_dump_has_the_payload_beside_the_unchanged_keys(tmp_path: Path) -> None:
    run = receiver(sent=3)
    run.on_frame(icmpecho_reply(stamp(run.template, 1)), 1.0)
    out = tmp_path / "probe.json"
    run.dump(out)
    data = json.loads(out.read_text())
    assert set(data) == {
        "pps", "t0", "sent", "send_ts", "replies", "payload", "achieved_pps", "behind"
    }  # fmt: skip
    assert data["behind"] == {"count": 0, "skipped_s": 0.0, "log": []}
    assert data["replies"] == [[1, 1.0]]
    assert payload_figures(data) == {
        "probe_size": 256, "payload_checked": 1, "payload_corrupt": 0,
        "payload_foreign": 0, "payload_truncated": 0, "samples": [],
    }  # fmt: skip
    assert payload_figures(data) == payload_figures(data["payload"])


def test_a_dump_without_payload_part_has_no_figures() -> None:
    assert payload_figures({"sent": 3, "replies": []}) == {}
    assert payload_figures({}) == {}
    assert payload_failure({}) is None


def test_payload_failure_with_counts_but_no_samples_still_fails() -> None:
    reason = payload_failure({"payload_checked": 10, "payload_corrupt": 2, "samples": []})
    assert reason is not None and reason.startswith("replies with a wrong payload; 2 of 10")


@pytest.mark.parametrize("size", [MIN_SIZE, 63, 256, MAX_SIZE])
def test_sizes_in_bounds_are_accepted(size: int) -> None:
    check_probe_size(size)
    assert len(template(size)) == size


def test_sizes_out_of_bounds_are_refused_with_the_bounds() -> None:
    assert (MIN_SIZE, MAX_SIZE) == (62, 1514)
    with pytest.raises(UsageError, match=r"^--probe-size 20 is below the probe's 62-byte minimum"):
        check_probe_size(20)
    with pytest.raises(UsageError, match=r"use 62\.\.1514$"):
        check_probe_size(61)
    with pytest.raises(UsageError, match=r"^--probe-size 1515 is above .*: use 62\.\.1514$"):
        check_probe_size(1515)
    with pytest.raises(ValueError, match="below"):
        payload_for(40)


def test_the_script_runs_alone_with_the_stdlib_and_checks_its_size(tmp_path: Path) -> None:
    # what the tester gets: probe.py alone in a directory; -S: no site-packages at all
    script = tmp_path / "probe.py"
    script.write_text(Path(probe.__file__).read_text())
    ok = subprocess.run([sys.executable, "-S", str(script), "--help"], capture_output=True,
                        text=True, cwd=tmp_path, check=False)  # fmt: skip
    assert ok.returncode == 0 and "--size" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-S", str(script), "--iface", "lo", "--dst-mac", GUEST_MAC,
         "--src-ip", TESTER_IP, "--dst-ip", GUEST_IP, "--pps", "1", "--out", "x.json",
         "--size", "20"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "--probe-size 20 is below" in bad.stderr


def test_the_tester_passes_the_probe_size(tmp_path: Path) -> None:
    argv: dict[str, list[str]] = {}

    class Node:
        def process(self, name: str, args: list[str], rundir: Any) -> Any:
            argv[name] = args
            return SimpleNamespace(name=name)

    rundir = SimpleNamespace(path=tmp_path)
    tester.Tester("t", rundir, Node(), "eth0", GUEST_MAC, 1000, (TESTER_IP, GUEST_IP), "python3",  # type: ignore[arg-type]
           "/w", probe_size=1514)  # fmt: skip
    assert argv["t"][argv["t"].index("--size") + 1] == "1514"
    tester.Tester("u", rundir, Node(), "eth0", GUEST_MAC, 1000, (TESTER_IP, GUEST_IP), "python3",  # type: ignore[arg-type]
           "/w")  # fmt: skip
    assert argv["u"][argv["u"].index("--size") + 1] == "256"
    tester.Tester("s", rundir, Node(), "eth0", GUEST_MAC, 50, None, "python3", "/w")  # type: ignore[arg-type]
    assert "--size" not in argv["s"]  # the seed's UDP sender has no probes
