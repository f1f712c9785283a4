"""The embedded lab reached over SSH: sshd in each namespace and a testbed file for it.

`vhostlm lab up --ssh` gives users (and CI) three "servers" on one machine: every role's
namespace gets a management veth from this machine's namespace, its own sshd with a host
key made for the run, and accepts one client key made for the run. The testbed file it
writes drives the same cases through the SSH path as on real hardware.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from vhostlm.addresses import MGMT_NET
from vhostlm.errors import SetupError, UsageError
from vhostlm.rundir import RunDir, proc_starttime
from vhostlm.testbed.lab import Lab
from vhostlm.testbed.shell import run
from vhostlm.testbed.topology import ROLES
from vhostlm.wait import Deadline

SSHD = "/usr/sbin/sshd"
# Debian's libfaketime: preloaded, it shifts what a program reads of CLOCK_REALTIME
LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"
SKEWABLE = ("host", "backup")  # the tester's replies carry kernel timestamps: not shifted


def parse_skew(text: str) -> tuple[str, float]:
    """`ROLE=SECONDS` of `lab up --ssh --clock-skew`; UsageError naming the fix."""
    role, sep, value = text.partition("=")
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not sep or role not in SKEWABLE or seconds != seconds or abs(seconds) > 86400:
        raise UsageError(
            f"--clock-skew {text!r}: say ROLE=SECONDS with ROLE host or backup (the tester's "
            "probe replies carry kernel timestamps, which faketime does not shift) and "
            "|SECONDS| up to 86400, e.g. --clock-skew backup=2.5"
        )
    return role, seconds


def skew_env(seconds: float) -> str:
    """sshd's SetEnv line that puts every program of a node's sessions `seconds` off:
    libfaketime shifts the wall clock only (monotonic time, which QEMU's and DPDK's timers
    use, is left alone); kernel timestamps (tcpdump's, SO_TIMESTAMPNS) are not shifted."""
    return (
        f"SetEnv LD_PRELOAD={LIBFAKETIME} FAKETIME={seconds:+g} "
        "FAKETIME_DONT_FAKE_MONOTONIC=1 FAKETIME_DONT_RESET=1"
    )


def _free_subnet(run_id: str) -> int:
    """A third octet no address of this machine uses yet (derived from the run id)."""
    used = run(["ip", "-4", "-o", "addr", "show"])
    start = int(run_id[:2], 16)
    for k in (start + i for i in range(256)):
        if f" {MGMT_NET}.{k % 256}." not in used:
            return k % 256
    raise SetupError(f"no free /24 left in {MGMT_NET}.0.0/16 for the SSH lab")


def _keygen(path: Path, comment: str) -> str:
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path.with_suffix(".pub").read_text().strip()


def sshd_config(
    addr: str, host_key: Path, authorized: Path, pid_file: Path, extra: Sequence[str] = ()
) -> str:
    """A minimal sshd configuration: root by key only, this address only, SFTP on;
    `extra`: more lines (a clock skew's SetEnv)."""
    return "\n".join(
        [
            *extra,
            f"ListenAddress {addr}",
            "Port 22",
            f"HostKey {host_key}",
            f"AuthorizedKeysFile {authorized}",
            f"PidFile {pid_file}",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "AllowTcpForwarding local",
            "AllowStreamLocalForwarding yes",
            "X11Forwarding no",
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
            "",
        ]
    )


def start_sshd(rundir: RunDir, netns: str, config: Path, log: Path, timeout: float = 15.0) -> int:
    """Start sshd in `netns` (recorded for teardown); wait for its listening line."""
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation directory
    argv = ["ip", "netns", "exec", netns, SSHD, "-D", "-e", "-f", str(config)]
    rundir.record_command(f"sshd-{netns}", argv)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    rundir.record("pids", [proc.pid, proc_starttime(proc.pid)])
    deadline = Deadline(timeout)  # the log file has no event: poll it, and sshd's exit
    while "Server listening" not in log.read_text(errors="replace"):
        if proc.poll() is not None or deadline.expired():
            tail = log.read_text(errors="replace").strip().splitlines()[-1:]
            raise SetupError(f"sshd in {netns} did not start: {' '.join(tail) or 'no output'}")
        time.sleep(0.05)
    return proc.pid


def start_ssh_lab(lab: Lab, accel: str, python: str, skew: tuple[str, float] | None = None) -> Path:
    """sshd in each role's namespace; write and return the testbed file for them.
    `skew` (role, seconds): that node's programs see a wall clock that far off."""
    if not Path(SSHD).exists():
        raise SetupError(f"{SSHD} not found: apt-get install openssh-server")
    if skew is not None and not Path(LIBFAKETIME).exists():
        raise SetupError(f"{LIBFAKETIME} not found: apt-get install libfaketime")
    rundir = lab.rundir
    keys = rundir.runtime / "ssh"
    keys.mkdir(mode=0o700, exist_ok=True)
    client_pub = _keygen(keys / "id_ed25519", f"vhostlm-{lab.run_id}")
    authorized = keys / "authorized_keys"
    authorized.write_text(client_pub + "\n")
    os.chmod(authorized, 0o600)
    k = _free_subnet(lab.run_id)
    known: list[str] = []
    nodes: dict[str, object] = {}
    for i, role in enumerate(ROLES):
        ns, host_if = lab.ns(role), f"vl{lab.run_id}{role[0]}"
        outside, inside = f"{MGMT_NET}.{k}.{4 * i + 1}", f"{MGMT_NET}.{k}.{4 * i + 2}"
        run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", "mgmt0", "netns", ns])
        run(["ip", "addr", "add", f"{outside}/30", "dev", host_if])
        run(["ip", "link", "set", host_if, "up"])
        run(["ip", "-n", ns, "addr", "add", f"{inside}/30", "dev", "mgmt0"])
        run(["ip", "-n", ns, "link", "set", "mgmt0", "up"])
        host_key = keys / f"host_{role}"
        known.append(f"{inside} {_keygen(host_key, role)}")
        config = keys / f"sshd_{role}.conf"
        extra = [skew_env(skew[1])] if skew is not None and skew[0] == role else []
        pid_file = keys / f"sshd_{role}.pid"
        config.write_text(sshd_config(inside, host_key, authorized, pid_file, extra))
        start_sshd(rundir, ns, config, rundir.log_path(f"sshd-{role}"))
        nodes[role] = {
            "ssh": {"address": inside, "user": "root", "key": str(keys / "id_ed25519"),
                    "known_hosts": str(keys / "known_hosts")},
            "port": {"interface": lab.port(role)},
            "hugepages": {"mount": lab.hugedir(role)},
            "python": python,
            "workdir": str(rundir.runtime / f"node-{role}"),
        }  # fmt: skip
    (keys / "known_hosts").write_text("\n".join(known) + "\n")
    testbed = {
        "nodes": nodes,
        "migration": {
            "host": lab.migration_ip("host"),
            "backup": lab.migration_ip("backup"),
            "port": lab.migration_port,
        },  # fmt: skip
        "guest": {"accel": accel},
    }
    path = rundir.path / "testbed.yaml"
    header = f"# the SSH lab {lab.run_id}; remove it with: vhostlm lab down {lab.run_id}\n"
    if skew is not None:
        header += f"# the {skew[0]}'s clock is {skew[1]:+g} s off (libfaketime)\n"
    path.write_text(header + yaml.safe_dump(testbed, sort_keys=False))
    return path
