"""One run of a plan on the embedded lab: set up once, run the cases, tear down, report."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from vhostlm import __version__
from vhostlm.apps.qemu import qemu_version as parse_qemu
from vhostlm.backends.registry import DEFAULT_BACKEND, backend_class, check_programs
from vhostlm.beds import BedSetup, Budget, LabSetup, SshSetup, bed_setup, this_machine
from vhostlm.errors import SetupError, UsageError
from vhostlm.guests.disk import DiskSpec, image_format
from vhostlm.guests.tools import build_tools_disk
from vhostlm.image.build import build_image
from vhostlm.image.cache import GuestImage
from vhostlm.nodes.clock import Clocks
from vhostlm.nodes.local import LocalNode
from vhostlm.options import guest_password_file
from vhostlm.plans.env import LabEnv, RunOptions
from vhostlm.plans.flow import run_case
from vhostlm.plans.spec import CaseSpec
from vhostlm.report.html import render_report_files
from vhostlm.report.junit import write_junit
from vhostlm.report.progress import Progress
from vhostlm.report.results import RunResult, now_iso, write_results
from vhostlm.rundir import RunDir
from vhostlm.testbed.cleanup import teardown_runtime
from vhostlm.testbed.topology import Tools, Topology

CACHE_DIR = Path(os.environ.get("VHOSTLM_CACHE", "/var/cache/vhostlm"))


def default_output() -> Path:
    """./results/<timestamp>/ (a suffix keeps two runs in the same second apart)."""
    base = Path("results") / time.strftime("%Y%m%d-%H%M%S")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def budget(options: RunOptions) -> Budget:
    """Hugepage memory of one guest and one vhost backend (--backend's) for this run."""
    return Budget(options.guest_mem_mb, backend_class(options.backend).hugepage_mb)


def check_backend(setup: BedSetup, backend: str) -> None:
    """The backend's programs exist where it runs: this machine for the lab (checked as the
    preflight checks its programs, before it), host and backup of a testbed (once reached).
    UsageError, one line: nothing has started."""
    nodes: dict[str, tuple[Callable[[str], str | None], Tools]] = {}
    if isinstance(setup, SshSetup):
        remote = setup.remote
        assert remote is not None, "reach() first"
        for role in ("host", "backup"):
            node = remote.node(role)
            nodes[f"node {role} ({node.label})"] = (node.which, remote.tools(role))
    else:
        nodes["this machine"] = (lambda binary: shutil.which(binary), Tools())
    check_programs(backend, nodes)


def _raise_interrupt(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def image(progress: Progress) -> GuestImage:
    """The guest image from the cache, built if its inputs changed."""
    return build_image(CACHE_DIR / "images", log=progress.note)


def guest_login(options: RunOptions, setup: BedSetup) -> tuple[str, str, str] | None:
    """(image, user, password) of the run's own guest image: --guest-image, else the
    testbed's guest.image; None for vhostlm's initramfs. Checked before anything starts:
    the password file must exist (its content is held in memory only)."""
    remote = setup.guest_image()
    if remote is None and options.guest_image is None:
        return None
    if remote is not None:
        image, user, given = remote
        given = options.guest_password_file or given
    else:
        assert options.guest_image is not None
        image, user, given = str(options.guest_image.resolve()), options.guest_user, None
        given = options.guest_password_file
    secret = guest_password_file(Path(image), given)
    if not secret.is_file():
        raise UsageError(
            f"guest image {image}: no password file {secret}: give --guest-password-file "
            "(or guest.password_file in the testbed file)"
        )
    return image, user, secret.read_text().strip()


def disk_spec(login: tuple[str, str, str] | None, bed: Topology) -> DiskSpec | None:
    """The guest image's spec, its format read where host's QEMU will open it."""
    if login is None:
        return None
    image, user, password = login
    node = bed.node("host")
    if isinstance(node, LocalNode):
        fmt = image_format(Path(image))
    else:
        info = json.loads(node.run(["qemu-img", "info", "--output=json", "-U", image]))
        fmt = str(info.get("format", ""))
        if fmt not in ("raw", "qcow2"):
            raise UsageError(f"guest.image {image}: a {fmt} image; give a raw or qcow2 one")
    return DiskSpec(Path(image), fmt, user, password, tools=build_tools_disk(CACHE_DIR / "tools"))


def _last_reading(clocks: Clocks, progress: Progress) -> None:
    """The clocks read once more after the cases: a node gone now is a note, not an error
    (the cases' own readings already corrected their times)."""
    try:
        clocks.read()
    except SetupError as exc:
        progress.note(f"clock reading after the run: {exc}")


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
    setup = bed_setup(testbed, options.qemu, options.guest_image)
    if isinstance(setup, LabSetup) and options.backend != DEFAULT_BACKEND:
        check_backend(setup, options.backend)  # testpmd is the preflight's own check
    setup.check(budget(options))  # root, QEMU and testpmd, hugepages
    login = guest_login(options, setup)
    if login is not None and options.guest_image is None:  # the testbed's guest.image
        options = dataclasses.replace(options, guest_image=Path(login[0]))  # sizes its memory
    started = time.monotonic()
    out = (output or default_output()).resolve()
    rundir = RunDir(out, secrets.token_hex(3))
    result = RunResult(
        started=now_iso(),
        testbed=setup.label,
        command=sys.argv,
        output_dir=str(out),
        run_id=rundir.run_id,
        host=this_machine(),
    )
    # Ctrl-C and SIGTERM end the run through the same teardown, even where the parent
    # started vhostlm with SIGINT ignored (a background job of a non-interactive shell).
    previous = {
        sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:  # unreachable nodes and missing programs: one line, nothing started
        setup.reach(rundir)
        if not isinstance(setup, LabSetup):
            check_backend(setup, options.backend)
    except BaseException:
        teardown_runtime(rundir.runtime)
        raise
    progress.note(f"run {rundir.run_id}: output in {out}")
    clocks: Clocks | None = None
    try:
        progress.phase("setup", "image")
        t = time.monotonic()
        img = image(progress)
        result.phases["image_s"] = round(time.monotonic() - t, 3)
        progress.phase("setup", setup.phase)
        t = time.monotonic()
        bed = setup.up(rundir, img, budget(options), options.switch_learning)
        qemu, facts = setup.facts()
        result.host.update(facts)
        result.versions = {
            "vhostlm": __version__,
            "python": platform.python_version(),
            "qemu": qemu,
            "dpdk": img.dpdk_version,
            "guest_kernel": img.kernel_version,
        }
        result.phases["lab_s"] = round(time.monotonic() - t, 3)
        clocks = bed.clocks
        clocks.read()  # before the run: each case's traffic reads them again after it
        progress.phase("setup", "accel probe")
        t = time.monotonic()
        result.accel = setup.accel(img, rundir, CACHE_DIR / "accel.json")
        result.phases["accel_probe_s"] = round(time.monotonic() - t, 3)
        env = LabEnv(rundir, bed, img, result.accel, options, progress, parse_qemu(qemu),
                     disk_spec(login, bed))  # fmt: skip
        if env.disk is not None:
            result.host["guest_image"] = str(env.disk.image)
            result.host["guest_image_format"] = env.disk.fmt
        result.host["guest_cpu"] = env.cpu
        for case in cases:
            result.cases.append(run_case(case, env))
    finally:
        for sig in previous:  # a second Ctrl-C must not cut the teardown short
            signal.signal(sig, signal.SIG_IGN)
        progress.phase("teardown", "cleanup")
        t = time.monotonic()
        if clocks is not None:
            _last_reading(clocks, progress)
            result.clocks = clocks.figures()
        problems = setup.down()
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
