"""Nobody let in: private sockets, one TCP listener, an encrypted migration, inert input."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.live import LiveRun, steps

CASE = "virtio_net"
PWNED = Path("/tmp/pwned")
USERS_PID_RE = re.compile(r"pid=(\d+)")


def listeners(netns: str | None, proto: str) -> list[tuple[str, str, set[int]]]:
    """(local address, process names, pids) of every listening `proto` socket in `netns`."""
    argv = ["ss", "-H", "-l", "-n", "-p", "-t" if proto == "tcp" else "-u"]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        users = " ".join(fields[5:])
        found.append((fields[3], users, {int(p) for p in USERS_PID_RE.findall(users)}))
    return found


def run_namespaces(run_id: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.startswith(f"vhostlm-{run_id}-")]


def test_sockets_are_private_and_the_only_listener_is_the_migration_port(
    tmp_path: Path, live: list[LiveRun]
) -> None:
    run = LiveRun(tmp_path / "run", "--case", CASE)
    live.append(run)
    run.wait_for(f"{CASE}: guest_receives")  # both QEMUs and testpmds up, before `migrate`
    sock_dir = run.runtime / "sock"
    for path in (Path("/run/vhostlm"), run.runtime, sock_dir):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    modes = {p.name: stat.S_IMODE(p.lstat().st_mode) for p in sock_dir.iterdir()}
    assert all(stat.S_ISSOCK(p.lstat().st_mode) for p in sock_dir.iterdir())
    assert sorted(modes) == sorted(
        f"{CASE}-{role}-{kind}.sock"
        for role in ("host", "backup")
        for kind in ("console", "memcheck", "qmp", "vhost")
    )
    assert set(modes.values()) == {0o600}, modes

    run_pids = set(run.processes())
    namespaces = run_namespaces(run.run_id)
    assert len(namespaces) == 4, namespaces
    tcp = {ns: listeners(ns, "tcp") for ns in namespaces}
    udp = {ns: listeners(ns, "udp") for ns in namespaces}
    root_tcp = [entry for entry in listeners(None, "tcp") if entry[2] & run_pids]
    root_udp = [entry for entry in listeners(None, "udp") if entry[2] & run_pids]
    backup = f"vhostlm-{run.run_id}-backup"
    dst_qemu = run.pid_of("qemu-system-x86_64", "-incoming")
    assert [(a, pids) for a, _, pids in tcp[backup]] == [("198.18.0.2:4444", {dst_qemu})]
    assert {ns: found for ns, found in tcp.items() if ns != backup and found} == {}
    assert {ns: found for ns, found in udp.items() if found} == {}
    assert root_tcp == [] and root_udp == []
    assert run.finish() == 0, run.output()


@contextlib.contextmanager
def capture_migration(netns: str, pcap: Path) -> Iterator[subprocess.Popen[bytes]]:
    """tcpdump on the source's migration link: the source's packets to port 4444."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, "tcpdump", "-i", "mig0", "-U", "-n", "-s", "256",
         "-c", "40", "-w", str(pcap), "tcp dst port 4444 and (tcp[tcpflags] & tcp-push != 0)"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        assert b"listening on" in proc.stderr.readline()
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_migration_tls_encrypts_the_stream(tmp_path: Path, live: list[LiveRun], tls: bool) -> None:
    """--migration-tls: the stream opens with a TLS handshake and never shows QEMU's own
    stream header ('QEVM'), which the plain run shows, so the capture can tell them apart."""
    from scapy.layers.inet import TCP
    from scapy.utils import rdpcap

    run = LiveRun(tmp_path / "run", "--case", CASE, *(["--migration-tls"] if tls else []))
    live.append(run)
    run.wait_for(f"{CASE}: guest_receives")
    pcap = tmp_path / "mig.pcap"
    with capture_migration(f"vhostlm-{run.run_id}-host", pcap):
        assert run.finish() == 0, run.output()
    payloads = [bytes(p[TCP].payload) for p in rdpcap(str(pcap)) if TCP in p]
    payloads = [p for p in payloads if p]
    assert payloads, "no migration traffic captured"
    stream = b"".join(payloads)
    case = run.case()
    params = case["options"]["migration_parameters"]
    if tls:
        assert payloads[0][:2] == b"\x16\x03", payloads[0][:16]  # TLS handshake record
        assert b"QEVM" not in stream
        assert case["options"]["migration_tls"] == {
            "source": {"tls-creds": "vhostlm-tls-client", "tls-hostname": "198.18.0.2"},
            "destination": {"tls-creds": "vhostlm-tls-server"},
            "verify_peer": True,
        }
        assert params["tls-creds"] == "vhostlm-tls-client"
        commands = (run.out / "commands.sh").read_text()
        assert "openssl x509 -req" in commands  # how the run's certificates were made
    else:
        assert payloads[0][:4] == b"QEVM", payloads[0][:16]
        assert "migration_tls" not in case["options"]
    assert steps(case)["receives_after_migration"]["verdict"] == "pass"


@pytest.fixture
def no_pwned() -> Iterator[None]:
    """/tmp/pwned must not exist before, and must not appear."""
    PWNED.unlink(missing_ok=True)
    yield
    assert not PWNED.exists(), "a hostile value was run as a shell command"


def test_hostile_output_path_lands_as_data(
    tmp_path: Path, live: list[LiveRun], no_pwned: None
) -> None:
    """--output is where logs, commands.sh and results go: it stays a path, and every line
    of commands.sh still reads back (shlex) as the argument list that was run."""
    out = tmp_path / f"run; touch {PWNED} $(touch {PWNED}) `touch {PWNED}`"
    run = LiveRun(out, "--case", CASE)
    live.append(run)
    assert run.finish() == 0, run.output()
    assert (out / "results.json").exists()
    commands = (out / "commands.sh").read_text()
    tester = next(ln for ln in commands.splitlines() if "probe.py" in ln)
    argv = shlex.split(tester)  # what a person gets when copying the line into a shell
    assert argv[argv.index("--out") + 1].endswith(f"/{CASE}-tester.json")


def test_hostile_cpu_model_lands_as_data(
    tmp_path: Path, live: list[LiveRun], no_pwned: None
) -> None:
    """--cpu goes to QEMU as one argument: QEMU refuses the model by its literal name."""
    hostile = f"Nehalem; touch {PWNED}"
    run = LiveRun(tmp_path / "run", "--case", CASE, "--cpu", hostile)
    live.append(run)
    assert run.finish() == 1, run.output()
    case = run.case()
    assert case["verdict"] == "error"
    assert steps(case)["host_vm"]["verdict"] == "error"
    log = (tmp_path / "run" / "logs" / f"qemu-{CASE}-host.log").read_text()
    assert hostile in log, log  # QEMU's own complaint quotes the whole value
    assert os.path.exists(tmp_path / "run" / "results.json")
