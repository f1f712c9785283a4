"""Malformed input, as a user types it: one line naming the option, exit 2, nothing started.

Each row runs `python -m vhostlm ARGV...` in a subprocess, exactly as from a shell. The
table is a plain list of (id, argv, expected substring of the one stderr line); testbed
file rows (YAML) join it the same way. `{tmp}` in an argument is a fresh temporary
directory holding `afile` (a regular file), `notjson.json` and `adir/` (a directory).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vhostlm.guests.contract import GUEST_BASE_MB, PMD_HUGEPAGES

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = Path("/run/vhostlm")

BAD_INPUT: list[tuple[str, list[str], str]] = [
    ("negative-rate", ["run", "--pps", "-3"], "argument --pps: '-3' must be greater than 0"),
    ("zero-rate", ["run", "--pps", "0"], "argument --pps: '0' must be greater than 0"),
    ("non-numeric-rate", ["run", "--pps", "fast"], "argument --pps: 'fast' is not a number"),
    ("nan-rate", ["run", "--pps", "nan"], "argument --pps: 'nan' is not a finite number"),
    ("infinite-rate", ["run", "--pps", "inf"], "argument --pps: 'inf' is not a finite number"),
    (
        "unsendable-rate",
        ["run", "--pps", "1e9", "--case", "virtio_net"],
        "--pps 1e+09 is above the highest rate the tester supports, 20000 probes/s",
    ),
    (
        "unsendable-seed-rate",
        ["run", "--seed-traffic", "--pps", "20001"],
        "--pps 20001 is above the highest rate the tester supports",
    ),
    ("bad-mac", ["run", "--dst-mac", "52:54:00"], "argument --dst-mac: '52:54:00' is not a MAC"),
    ("non-hex-mac", ["run", "--dst-mac", "zz:54:00:00:00:01"], "argument --dst-mac"),
    ("unknown-case", ["run", "--case", "nope"], "--case: unknown case 'nope'"),
    ("unknown-plan", ["run", "--plan", "huge"], "argument --plan: invalid choice: 'huge'"),
    ("zero-guest-mem", ["run", "--guest-mem", "0"], "argument --guest-mem: '0' must be"),
    ("non-numeric-smp", ["run", "--guest-smp", "two"], "argument --guest-smp: 'two' is not"),
    ("negative-round-trips", ["run", "--round-trips", "-1"], "argument --round-trips: '-1'"),
    ("fractional-loss", ["run", "--max-loss", "1.5"], "argument --max-loss: '1.5' is not"),
    ("zero-migration-timeout", ["run", "--migration-timeout", "0"], "--migration-timeout"),
    ("negative-bandwidth", ["run", "--max-bandwidth", "-5"], "argument --max-bandwidth"),
    ("unknown-guest-memory", ["run", "--guest-memory", "tmpfs"], "argument --guest-memory"),
    ("conflicting-limits", ["run", "--seed-traffic", "--max-loss", "1"], "--max-loss"),
    ("k-selects-nothing", ["run", "-k", "nosuchcase"], "-k 'nosuchcase' selects no case"),
    ("k-bad-syntax", ["run", "-k", "virtio and ("], "-k: cannot read"),
    (
        "probe-size-below-header",
        ["run", "--probe-size", "40"],
        "--probe-size 40 is below the probe's 62-byte minimum",
    ),
    (
        "probe-size-above-mtu",
        ["run", "--probe-size", "9000"],
        "--probe-size 9000 is above the 1514-byte frame",
    ),
    (
        "memcheck-whole-guest",
        ["run", "--memcheck-mb", "1024"],
        "--memcheck-mb 1024 does not fit in the guest's 1024 MiB (--guest-mem): at most "
        f"{1024 - 2 * PMD_HUGEPAGES - GUEST_BASE_MB}",
    ),
    (
        "memcheck-above-guest",
        ["run", "--guest-mem", "512", "--memcheck-mb", "600"],
        "--memcheck-mb 600 does not fit in the guest's 512 MiB (--guest-mem): at most "
        f"{512 - 2 * PMD_HUGEPAGES - GUEST_BASE_MB}",
    ),
    (
        "guest-mem-below-pmd-case",
        ["run", "--guest-mem", str(GUEST_BASE_MB), "--case", "virtio_pmd"],
        f"--guest-mem {GUEST_BASE_MB} is too small for virtio_pmd: it needs at least "
        f"{GUEST_BASE_MB + 2 * PMD_HUGEPAGES} MiB ({GUEST_BASE_MB} MiB for the guest's kernel "
        f"and programs, {2 * PMD_HUGEPAGES} MiB of hugepages for its testpmd); give "
        f"--guest-mem {GUEST_BASE_MB + 2 * PMD_HUGEPAGES} or more",
    ),
    (
        "guest-mem-below-kernel-case",
        ["run", "--guest-mem", "100", "--case", "virtio_net"],
        f"--guest-mem 100 is too small for virtio_net: it needs at least {GUEST_BASE_MB} MiB",
    ),
    (
        "guest-mem-below-dirtying-case",
        ["run", "--guest-mem", "300", "--case", "noconverge_virtio_net"],
        # the memory checker's default region there, capped at 16 MiB by the case
        "--guest-mem 300 is too small for noconverge_virtio_net: it needs at least "
        f"{GUEST_BASE_MB + 16 + 128} MiB ({GUEST_BASE_MB} MiB for the guest's kernel and "
        "programs, 16 MiB for the memory checker, 128 MiB for its dirtying load)",
    ),
    ("qemu-absent", ["run", "--qemu", "{tmp}/absent"], "--qemu {tmp}/absent: no such executable"),
    (
        "qemu-not-executable",
        ["run", "--qemu", "{tmp}/afile"],
        "--qemu {tmp}/afile: no such executable",
    ),
    (
        "qemu-not-qemu",
        ["run", "--qemu", "/bin/true"],
        "--qemu /bin/true: not a QEMU system emulator",
    ),
    ("doctor-qemu-not-qemu", ["doctor", "--qemu", "/bin/true"], "--qemu /bin/true: not a QEMU"),
    ("unknown-option", ["run", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    ("missing-value", ["run", "--pps"], "argument --pps: expected one argument"),
    ("output-is-a-file", ["run", "--output", "{tmp}/afile"], "--output: {tmp}/afile is not a"),
    ("output-under-a-file", ["run", "--output", "{tmp}/afile/run"], "--output: {tmp}/afile is"),
    ("output-unwritable", ["run", "--output", "/proc/vhostlm-run"], "--output: cannot write"),
    ("output-empty", ["run", "--output", ""], "argument --output: empty path"),
    ("junit-empty", ["run", "--junit", ""], "argument --junit: empty path"),
    ("junit-is-a-directory", ["run", "--junit", "{tmp}/adir"], "--junit: {tmp}/adir is a dir"),
    ("junit-under-a-file", ["run", "--junit", "{tmp}/afile/j.xml"], "--junit: {tmp}/afile is"),
    ("report-absent", ["report", "{tmp}/absent.json"], "cannot read results file"),
    ("report-not-json", ["report", "{tmp}/notjson.json"], "not valid JSON"),
    ("report-a-directory", ["report", "{tmp}/adir"], "cannot read results file"),
    ("unknown-command", ["frobnicate"], "argument command: invalid choice: 'frobnicate'"),
    ("no-command", [], "say what to do"),
    ("lab-unknown-verb", ["lab", "sideways"], "invalid choice: 'sideways'"),
    (
        "testbed-absent",
        ["run", "--testbed", "{tmp}/absent.yaml"],
        "testbed file {tmp}/absent.yaml not found",
    ),  # fmt: skip
    (
        "testbed-yaml-syntax",
        ["run", "--testbed", "{tmp}/adir/syntax.yaml"],
        "syntax.yaml: YAML syntax error at line 3",
    ),  # fmt: skip
    (
        "testbed-unknown-key",
        ["run", "--testbed", "{tmp}/adir/unknown.yaml"],
        "unknown.yaml: nodes.host.adress: unknown key",
    ),  # fmt: skip
    (
        "testbed-wrong-type",
        ["run", "--testbed", "{tmp}/adir/wrongtype.yaml"],
        "wrongtype.yaml: nodes.host.ssh.port: Input should be a valid integer",
    ),  # fmt: skip
    (
        "testbed-bad-pci",
        ["run", "--testbed", "{tmp}/adir/badpci.yaml"],
        "badpci.yaml: nodes.host.port.pci: '3b:00.0' is not a PCI address like 0000:3b:00.0",
    ),  # fmt: skip
    (
        "testbed-absent-key",
        ["run", "--testbed", "{tmp}/adir/nokey.yaml"],
        "nokey.yaml: nodes.backup.ssh.key: SSH key /nonexistent/id does not exist",
    ),
    (
        "doctor-bad-testbed",
        ["doctor", "--testbed", "{tmp}/adir/unknown.yaml"],
        "nodes.host.adress: unknown key",
    ),  # fmt: skip
    (
        "missing-guest-image",
        ["run", "--guest-image", "{tmp}/nope.qcow2"],
        "--guest-image {tmp}/nope.qcow2: no such file (give a raw or qcow2 disk image)",
    ),
    (
        "non-image-guest-image",
        ["run", "--guest-image", "{tmp}/afile"],
        "--guest-image {tmp}/afile: not a bootable disk image (no boot record in its first sector)",
    ),
    (
        "directory-guest-image",
        ["run", "--guest-image", "{tmp}/adir"],
        "--guest-image {tmp}/adir: no such file",
    ),
    (
        "password-file-without-image",
        ["run", "--guest-password-file", "{tmp}/afile"],
        "--guest-password-file needs --guest-image",
    ),
    ("unknown-backend", ["run", "--backend", "vpp"], "argument --backend: invalid choice: 'vpp'"),
    ("doctor-unknown-backend", ["doctor", "--backend", "vpp"], "argument --backend: invalid"),
    (
        # PATH has no OVS (the preflight's programs neither: the backend's are checked first)
        "ovs-missing",
        ["run", "--backend", "ovs-dpdk", "--case", "virtio_net"],
        "not found on this machine: apt-get install openvswitch-switch-dpdk",
    ),
    (
        "zero-boot-timeout",
        ["run", "--boot-timeout", "0"],
        "argument --boot-timeout: '0' must be greater than 0",
    ),
]

_NODE = "{ssh: {address: 192.0.2.%d%s}, port: {%s}}"
_PORTS = {"host": "interface: eth0", "backup": "interface: eth0", "tester": "interface: eth0"}


def yaml_testbed(**changes: str) -> str:
    """A testbed file valid but for `changes` (role -> replacement node mapping)."""
    nodes = {role: _NODE % (i + 1, "", _PORTS[role]) for i, role in enumerate(_PORTS)}
    nodes.update(changes)
    body = "".join(f"  {role}: {text}\n" for role, text in nodes.items())
    return f"nodes:\n{body}migration: {{host: 198.18.0.1, backup: 198.18.0.2}}\n"


TESTBEDS = {
    "syntax.yaml": "nodes:\n  host: {ssh: {address: 192.0.2.1}\n  backup: [\n",
    "unknown.yaml": yaml_testbed(host="{adress: 192.0.2.1, port: {interface: eth0}}"),
    "wrongtype.yaml": yaml_testbed(host=_NODE % (1, ", port: twenty-two", "interface: eth0")),
    "badpci.yaml": yaml_testbed(host=_NODE % (1, "", "pci: '3b:00.0', driver: vfio-pci")),
    "nokey.yaml": yaml_testbed(backup=_NODE % (2, ", key: /nonexistent/id", "interface: eth0")),
}


def runs_of(tmp_path: Path) -> list[str]:
    """Runtime directories and lab namespaces of runs whose output is under `tmp_path`
    (other runs on the machine may come and go meanwhile: they are not ours)."""
    found = []
    runs = list(RUNTIME.iterdir()) if os.access(RUNTIME, os.R_OK) else []
    for runtime in runs:
        try:
            output = json.loads((runtime / "resources.json").read_text())["output"]
        except (OSError, ValueError, KeyError):
            continue
        if output.startswith(str(tmp_path)):
            found.append(str(runtime))
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = {Path(r).name for r in found}
    found += [ln.split()[0] for ln in out.splitlines() if ln.split("-")[1:2] and
              ln.startswith("vhostlm-") and ln.split("-")[1] in names]  # fmt: skip
    return found


@pytest.mark.parametrize(
    ("argv", "expected"), [r[1:] for r in BAD_INPUT], ids=[r[0] for r in BAD_INPUT]
)
def test_bad_input_is_one_line_naming_it_exit_2(
    tmp_path: Path, argv: list[str], expected: str
) -> None:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "notjson.json").write_text("{not json")
    (tmp_path / "adir").mkdir()
    for name, text in TESTBEDS.items():
        (tmp_path / "adir" / name).write_text(text)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    # No QEMU, testpmd or ip on PATH: a row that slips through validation is refused by the
    # preflight (and fails here on its message) instead of starting a real run.
    env = dict(os.environ, PATH=str(tmp_path / "adir"))
    proc = subprocess.run(
        [sys.executable, "-m", "vhostlm", *argv], env=env,
        capture_output=True, text=True, cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("vhostlm: error: "), lines[0]
    assert expected.replace("{tmp}", str(tmp_path)) in lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile", "notjson.json"]
    assert not (tmp_path / "results").exists()
    assert runs_of(tmp_path) == []


def test_the_table_is_wide_enough() -> None:
    assert len(BAD_INPUT) >= 16
    assert len({r[0] for r in BAD_INPUT}) == len(BAD_INPUT)
