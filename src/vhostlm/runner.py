"""One run of a plan on the embedded lab: set up once, run the cases, tear down, report."""

from __future__ import annotations

import os
import platform
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from vhostlm import __version__
from vhostlm.apps.accel import boots_under_kvm, probe_accel
from vhostlm.apps.qemu import qemu_version as parse_qemu
from vhostlm.backends.testpmd import TESTPMD_MB
from vhostlm.image.build import GuestImage, build_image
from vhostlm.plans.env import LabEnv, RunOptions
from vhostlm.plans.flow import run_case
from vhostlm.plans.spec import CaseSpec
from vhostlm.preflight import preflight
from vhostlm.report.html import render_report_files
from vhostlm.report.junit import write_junit
from vhostlm.report.progress import Progress
from vhostlm.report.results import RunResult, now_iso, write_results
from vhostlm.rundir import RunDir
from vhostlm.testbed import hugepages
from vhostlm.testbed.cleanup import teardown_runtime
from vhostlm.testbed.lab import Lab
from vhostlm.testbed.model import load_testbed
from vhostlm.testbed.remote import RemoteBed
from vhostlm.testbed.topology import Topology

CACHE_DIR = Path(os.environ.get("VHOSTLM_CACHE", "/var/cache/vhostlm"))


def default_output() -> Path:
    """./results/<timestamp>/ (a suffix keeps two runs in the same second apart)."""
    base = Path("results") / time.strftime("%Y%m%d-%H%M%S")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def hugepages_needed(options: RunOptions) -> int:
    """2 MiB pages for two guests (source and destination) and two vhost testpmds."""
    return 2 * (options.guest_mem_mb // 2) + 2 * (TESTPMD_MB // 2) + 32


def qemu_version() -> str:
    """`qemu-system-x86_64 --version`, first line's version number."""
    out = subprocess.run(
        ["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=False
    ).stdout
    words = out.split()
    return words[3] if len(words) > 3 else out.strip()


def _raise_interrupt(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def image(progress: Progress) -> GuestImage:
    """The guest image from the cache, built if its inputs changed."""
    return build_image(CACHE_DIR / "images", log=progress.note)


def node_hugepage_mb(options: RunOptions) -> int:
    """Hugepage memory one testbed server needs: a guest and a vhost testpmd at a time."""
    return options.guest_mem_mb + TESTPMD_MB + 64


def _remote_accel(bed: RemoteBed, rundir: RunDir) -> str:
    """The testbed file's accel, or `auto`: KVM when the guest really boots under it."""
    wanted = bed.spec.guest.accel
    if wanted != "auto":
        return wanted
    kernel, initrd = bed.guest_files("host")
    host = bed.node("host")
    return "kvm" if boots_under_kvm(host, kernel, initrd, rundir, bed.tools("host").qemu) else "tcg"


def run_plan(
    cases: list[CaseSpec],
    options: RunOptions,
    output: Path | None,
    progress: Progress,
    junit: Path | None = None,
    testbed: Path | None = None,
) -> RunResult:
    """Run `cases` on a fresh embedded lab, or on the servers of a `testbed` file; the lab
    is gone (ports restored, run directories removed) when this returns or raises."""
    spec = load_testbed(testbed) if testbed is not None else None
    if spec is None:
        preflight()
        hugepages.check_available(hugepages_needed(options))
    started = time.monotonic()
    out = (output or default_output()).resolve()
    rundir = RunDir(out, secrets.token_hex(3))
    result = RunResult(
        started=now_iso(),
        testbed="lab" if testbed is None else f"ssh:{testbed}",
        command=sys.argv,
        output_dir=str(out),
        run_id=rundir.run_id,
        host={"kernel": platform.release(), "machine": platform.machine()},
    )
    # Ctrl-C and SIGTERM end the run through the same teardown, even where the parent
    # started vhostlm with SIGINT ignored (a background job of a non-interactive shell).
    previous = {
        sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    remote: RemoteBed | None = None
    if spec is not None:  # unreachable nodes and missing programs: one line, nothing started
        remote = RemoteBed(spec, str(testbed), rundir)
        try:
            remote.reach()
        except BaseException:
            teardown_runtime(rundir.runtime)
            raise
    progress.note(f"run {rundir.run_id}: output in {out}")
    try:
        progress.phase("setup", "image")
        t = time.monotonic()
        img = image(progress)
        result.phases["image_s"] = round(time.monotonic() - t, 3)
        result.versions = {
            "vhostlm": __version__,
            "python": platform.python_version(),
            "qemu": qemu_version(),
            "dpdk": img.dpdk_version,
            "guest_kernel": img.kernel_version,
        }
        progress.phase("setup", "lab" if spec is None else "testbed")
        t = time.monotonic()
        bed: Topology
        if spec is None:
            lab = Lab(rundir).up(hugepages_needed(options), learning=options.switch_learning)
            lab.image = (str(img.kernel), str(img.initrd))
            bed = lab
        else:
            assert remote is not None
            bed = remote.up(img, node_hugepage_mb(options))
            host = remote.node("host")
            result.versions["qemu"] = host.run([remote.tools("host").qemu, "--version"]).split(
                "\n"
            )[0]
            result.host.update(remote.facts)
            result.host["kernel"] = host.run(["uname", "-r"]).strip()
            result.host["machine"] = host.run(["uname", "-m"]).strip()
        result.phases["lab_s"] = round(time.monotonic() - t, 3)
        progress.phase("setup", "accel probe")
        t = time.monotonic()
        if remote is None:
            result.accel = probe_accel(img, rundir, CACHE_DIR / "accel.json")
        else:
            result.accel = _remote_accel(remote, rundir)
        result.phases["accel_probe_s"] = round(time.monotonic() - t, 3)
        env = LabEnv(
            rundir, bed, img, result.accel, options, progress, parse_qemu(result.versions["qemu"])
        )
        result.host["guest_cpu"] = env.cpu
        for case in cases:
            result.cases.append(run_case(case, env))
    finally:
        for sig in previous:  # a second Ctrl-C must not cut the teardown short
            signal.signal(sig, signal.SIG_IGN)
        progress.phase("teardown", "cleanup")
        t = time.monotonic()
        problems = remote.down() if remote is not None else []
        problems += teardown_runtime(rundir.runtime)
        result.phases["teardown_s"] = round(time.monotonic() - t, 3)
        for problem in problems:
            progress.note(f"teardown: {problem}")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        result.duration_s = round(time.monotonic() - started, 3)
        write_results(result, out / "results.json")
        render_report_files(result, out)
        if junit is not None:
            write_junit(result, junit)
    return result
