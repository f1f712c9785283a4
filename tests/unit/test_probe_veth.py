"""probe.py for real on a veth pair between two network namespaces this test makes.

The far namespace's kernel answers the echo requests. What only a real AF_PACKET socket
can show: replies carry the kernel's receive stamps (SO_TIMESTAMPNS), our own requests are
never taken for replies (PACKET_IGNORE_OUTGOING), PACKET_STATISTICS is read, and every
payload comes back intact. Needs root and `ip`; about a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vhostlm.measure import probe

# network namespaces need root (iproute2 comes with `make deps`), as the e2e tests do
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

NEAR_IP, FAR_IP = "198.18.254.1", "198.18.254.2"  # 198.18.0.0/15: benchmarking addresses


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def run_probe(near: str, mac: str, count: int, out: Path) -> subprocess.CompletedProcess[str]:
    """probe.py in the near namespace, `count` probes at 1000/s to the far side."""
    return subprocess.run(
        ["ip", "netns", "exec", near, sys.executable, probe.__file__, "--iface", "pv0",
         "--dst-mac", mac, "--src-ip", NEAR_IP, "--dst-ip", FAR_IP, "--pps", "1000",
         "--count", str(count), "--out", str(out)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
def veth() -> Iterator[tuple[str, str]]:
    """(near namespace, far MAC): a veth pair between two fresh namespaces, removed after."""
    tag = f"vhlmtest-{os.getpid()}"
    near, far = f"{tag}-near", f"{tag}-far"
    made: list[str] = []
    try:
        for ns in (near, far):
            ip("netns", "add", ns)
            made.append(ns)
        ip("link", "add", "pv0", "netns", near, "type", "veth", "peer", "name", "pv1",
           "netns", far)  # fmt: skip
        for ns, dev, addr in ((near, "pv0", NEAR_IP), (far, "pv1", FAR_IP)):
            ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        mac = json.loads(ip("-n", far, "-j", "link", "show", "pv1"))[0]["address"]
        yield near, mac
    finally:
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "delete", ns], check=False)


def test_a_real_probe_stream_is_kernel_stamped_and_ignores_its_own_requests(
    veth: tuple[str, str], tmp_path: Path
) -> None:
    near, mac = veth
    out = tmp_path / "probe.json"
    proc = run_probe(near, mac, 400, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    rx = data["rx"]
    assert rx["clock"] == "kernel" and rx["unstamped"] == 0
    assert rx["ignore_outgoing"] is True  # Linux >= 4.20
    assert rx["drops"] == 0 and rx["packets"] >= 400
    assert data["sent"] == 400
    seqs = [s for s, _ in data["replies"]]
    # the far side learnt our MAC from the ARP request before the stream: no request
    # waited for its neighbour resolution, each was answered once (no copy of a request)
    assert rx["arp_primed_ms"] is not None and rx["arp_primed_ms"] < 1000, rx
    assert sorted(seqs) == list(range(400))
    assert data["payload"]["checked"] == len(seqs) and data["payload"]["corrupt"] == 0
    send = data["send_ts"]
    lags = rx["read_lag_ms"]
    assert len(lags) == len(seqs) and min(lags) >= -1.0  # read after the kernel stamped it
    for (seq, at), lag in zip(data["replies"], lags, strict=True):
        # stamped by the kernel on arrival, a veth round trip after the send (the send
        # time is taken after send() returns, so the stamp may precede it slightly)
        assert send[seq] - 0.005 < at < send[seq] + 0.5, (seq, at, send[seq])
        assert lag < 1000.0
    assert "receive socket packets" in proc.stdout and "drops 0 clock kernel" in proc.stdout
    assert "the guest answered the tester's ARP request in " in proc.stdout


def test_the_far_side_knows_the_tester_before_the_first_probe(veth: tuple[str, str]) -> None:
    """The ARP request alone (no probe sent) leaves the far kernel a neighbour entry for
    the tester: what keeps its first replies out of the unresolved queue."""
    near, mac = veth
    far = near.removesuffix("-near") + "-far"
    assert NEAR_IP not in ip("-n", far, "neigh", "show", "dev", "pv1")
    code = (
        "import sys; from vhostlm.measure import probe; "
        "run = probe.ProbeRun('pv0', bytes(256), 1000.0); "
        f"src = open('/sys/class/net/pv0/address').read().strip(); "
        f"req = probe.build_arp_request('{mac}', src, '{NEAR_IP}', '{FAR_IP}'); "
        f"t = run.prime(req, '{FAR_IP}'); print('primed', t); sys.exit(t is None)"
    )
    proc = subprocess.run(["ip", "netns", "exec", near, sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    entry = ip("-n", far, "neigh", "show", "dev", "pv1")
    assert NEAR_IP in entry and "lladdr" in entry, entry


def test_a_guest_that_answers_no_arp_is_probed_anyway(
    veth: tuple[str, str], tmp_path: Path
) -> None:
    """arp_ignore=8 on the far side: no answer within PRIME_S, the stream goes on."""
    near, mac = veth
    far = near.removesuffix("-near") + "-far"
    ip("netns", "exec", far, "sysctl", "-q", "-w", "net.ipv4.conf.pv1.arp_ignore=8")
    out = tmp_path / "probe.json"
    proc = run_probe(near, mac, 100, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"no ARP answer from {FAR_IP} in {probe.PRIME_S:g} s: probing anyway" in proc.stdout
    data = json.loads(out.read_text())
    assert data["rx"]["arp_primed_ms"] is None and data["sent"] == 100
