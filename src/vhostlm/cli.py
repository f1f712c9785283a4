"""Command line: argument parsing only; the work happens in runner, lab and image modules."""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from vhostlm.backends.registry import BACKENDS, DEFAULT_BACKEND
from vhostlm.errors import SetupError, UsageError
from vhostlm.options import RunOptions, RunTarget, add_run_arguments, from_namespace, validate
from vhostlm.plans.catalog import PLANS, plan_of, select_cases
from vhostlm.report.progress import Progress
from vhostlm.report.summary import render_summary

if TYPE_CHECKING:
    from vhostlm.testbed.lab import Lab


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit 2, like every other usage error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Raise instead of printing usage."""
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> Parser:
    """The whole command-line grammar."""
    parser = Parser(prog="vhostlm", description="Prove vhost-user live migration works.")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)

    run = sub.add_parser("run", help="run a plan on the embedded lab (default: the seed plan)")
    add_run_arguments(run, choices={"plan": list(PLANS)})  # declared in vhostlm.options

    doctor = sub.add_parser(
        "doctor", help="check that a testbed (or this machine) can run the plan"
    )
    doctor.add_argument("--testbed", type=Path, metavar="FILE", help="the testbed file to check")
    doctor.add_argument("--qemu", metavar="PATH", help="check this QEMU binary instead")
    doctor.add_argument(
        "--backend", default=DEFAULT_BACKEND, choices=list(BACKENDS),
        help="also check this vhost backend (as `run --backend`)",
    )  # fmt: skip

    sub.add_parser("list", help="list the cases")

    report = sub.add_parser("report", help="render report.html (and JUnit) from a results.json")
    report.add_argument("results", type=Path, metavar="RESULTS.json")
    report.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML here")

    lab = sub.add_parser("lab", help="the embedded lab on its own")
    lab_sub = lab.add_subparsers(dest="lab_command", parser_class=Parser)
    up = lab_sub.add_parser("up", help="create a lab and leave it running")
    up.add_argument(
        "--ssh",
        action="store_true",
        help="also run sshd in each namespace and write a testbed file to drive it over SSH",
    )
    up.add_argument(
        "--clock-skew",
        metavar="ROLE=SECONDS",
        help="with --ssh: the programs of node ROLE (host or backup) see a wall clock SECONDS "
        "off (libfaketime), to try the clock-offset correction",
    )
    up.add_argument("--output", type=Path, metavar="DIR", help="where to write (default results/)")
    down = lab_sub.add_parser("down", help="remove labs whose run is gone")
    down.add_argument("ids", nargs="*", help="run ids to remove (default: every orphaned lab)")
    down.add_argument("--all", action="store_true", help="also labs of runs still in progress")
    lab_sub.add_parser("status", help="list labs")

    image = sub.add_parser("image", help="the guest image")
    image_sub = image.add_subparsers(dest="image_command", parser_class=Parser)
    build = image_sub.add_parser("build", help="build (or reuse) the guest initramfs")
    build.add_argument("--force", action="store_true")
    disk = image_sub.add_parser(
        "disk", help="build (or reuse) a Debian 12 disk image to boot with --guest-image"
    )
    disk.add_argument(
        "--output", type=Path, metavar="FILE",
        help="also copy it (qcow2) to FILE, with its root password in FILE.password",
    )  # fmt: skip
    disk.add_argument("--force", action="store_true", help="build again even if cached")
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    """`vhostlm run`."""
    from vhostlm.runner import run_plan

    target, options = from_namespace(RunTarget, args), from_namespace(RunOptions, args)
    cases = select_cases(target.plan, list(target.cases), target.keyword)
    validate(target, options, cases)
    with Progress() as progress:
        result = run_plan(
            cases, options, target.output, progress, junit=target.junit, testbed=target.testbed
        )
    print(render_summary(result, color=sys.stdout.isatty()))
    return result.exit_code


def cmd_report(args: argparse.Namespace) -> int:
    """`vhostlm report RESULTS.json`: the HTML report beside it, again."""
    from vhostlm.report.html import render_report_files
    from vhostlm.report.junit import write_junit
    from vhostlm.report.results import load_results

    result = load_results(args.results)
    path = render_report_files(result, args.results.resolve().parent)
    print(f"report: {path}")
    if args.junit is not None:
        write_junit(result, args.junit)
        print(f"junit: {args.junit}")
    return 0


def cmd_list() -> int:
    """`vhostlm list`: every case, its plan, the backends it runs on (--backend; the others
    would skip it; `NAME:client` only with --vhost-mode client) and the first line of its
    docstring."""
    from vhostlm.backends.registry import runs_on as backends_of

    width = max(len(case.name) for case in PLANS["all"])  # the columns stay aligned
    plans = max(len(plan) for plan in PLANS) + 2
    for case in PLANS["all"]:
        backends = [b for b in backends_of(case.backend_needs)
                    if case.backend in (None, b.split(":")[0])]  # fmt: skip
        plan, runs_on = f"[{plan_of(case)}]", "{" + ",".join(backends) + "}"
        print(f"{case.name:<{width}} {plan:<{plans}} {runs_on:<18} {case.description()}")
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    """`vhostlm lab up|down|status`."""
    from vhostlm.preflight import check_root
    from vhostlm.rundir import RUNTIME_ROOT, RunDir
    from vhostlm.runner import budget
    from vhostlm.testbed.cleanup import down_all, owner_alive, teardown_runtime
    from vhostlm.testbed.lab import Lab

    skew = None
    if args.lab_command == "up" and args.clock_skew is not None:  # bad input first
        from vhostlm.testbed.sshlab import parse_skew

        if not args.ssh:
            raise UsageError("--clock-skew needs --ssh: it skews a node's SSH sessions")
        skew = parse_skew(args.clock_skew)
    check_root()
    if args.lab_command == "up":
        run_id = secrets.token_hex(3)
        rundir = RunDir(args.output or Path("results") / f"lab-{run_id}", run_id)
        try:
            lab = Lab(rundir).up(budget(RunOptions()).lab_pages())
            testbed = start_ssh_lab_for(lab, skew) if args.ssh else None
        except BaseException:
            teardown_runtime(rundir.runtime)
            raise
        print(json.dumps(lab.status(), indent=1))
        if testbed is not None:
            print(f"testbed file: {testbed}\nrun over SSH with: vhostlm run --testbed {testbed}")
        print(f"lab {run_id} is up; remove it with: vhostlm lab down {run_id}")
        return 0
    if args.lab_command == "down":
        if args.ids:
            for run_id in args.ids:
                if not (RUNTIME_ROOT / run_id).is_dir():
                    raise UsageError(f"no lab {run_id!r}: see `vhostlm lab status`")
                teardown_runtime(RUNTIME_ROOT / run_id)
                print(f"removed {run_id}")
            return 0
        removed, problems = down_all(include_live=args.all)
        for item in removed:
            print(f"removed {item}")
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
        return 1 if problems else 0
    if args.lab_command == "status":
        runs = sorted(RUNTIME_ROOT.iterdir()) if RUNTIME_ROOT.exists() else []
        for runtime in runs:
            state = "running" if owner_alive(runtime) else "orphaned"
            print(f"{runtime.name}  {state}  {runtime}")
        if not runs:
            print("no labs")
        return 0
    raise UsageError("lab: say up, down or status")


def start_ssh_lab_for(lab: Lab, skew: tuple[str, float] | None = None) -> Path:
    """sshd in the lab's namespaces, with the accelerator this machine can use (and one
    node's clock skewed by `skew`)."""
    from vhostlm.apps.accel import probe_accel
    from vhostlm.runner import CACHE_DIR, image
    from vhostlm.testbed.sshlab import start_ssh_lab

    with Progress() as progress:
        img = image(progress)
    accel = probe_accel(img, lab.rundir, CACHE_DIR / "accel.json")
    return start_ssh_lab(lab, accel, sys.executable, skew)


def cmd_doctor(args: argparse.Namespace) -> int:
    """`vhostlm doctor [--testbed FILE]`: the table of checks; 0 only when all can run."""
    import shutil
    import tempfile

    from vhostlm.doctor import check_local, check_testbed
    from vhostlm.options import check_qemu
    from vhostlm.rundir import RunDir
    from vhostlm.runner import budget
    from vhostlm.testbed.cleanup import teardown_runtime
    from vhostlm.testbed.model import load_testbed

    if args.qemu is not None:
        check_qemu("--qemu", args.qemu)
    if args.testbed is None:
        doc = (
            check_local(args.qemu, args.backend) if args.qemu else check_local(backend=args.backend)
        )
    else:
        load_testbed(args.testbed)  # a bad file is a usage error before anything starts
        out = Path(tempfile.mkdtemp(prefix="vhostlm-doctor-"))
        rundir = RunDir(out, secrets.token_hex(3))
        try:
            need = budget(RunOptions(backend=args.backend)).node_mb()
            doc = check_testbed(args.testbed, rundir, need, args.qemu, args.backend)
        finally:
            teardown_runtime(rundir.runtime)
            shutil.rmtree(out, ignore_errors=True)
    print(doc.table())
    verdict = "can run the plan" if doc.ok else "cannot run the plan: fix the FAIL lines"
    print(f"{'testbed ' + str(args.testbed) if args.testbed else 'this machine'} {verdict}")
    return 0 if doc.ok else 1


def cmd_image_disk(args: argparse.Namespace) -> int:
    """`vhostlm image disk [--output FILE]`: the cached Debian image, copied out if asked."""
    from vhostlm.image.disk import build_disk, password_file
    from vhostlm.preflight import check_root
    from vhostlm.runner import CACHE_DIR

    out: Path | None = args.output
    if out is not None and (out.is_dir() or not out.parent.is_dir()):
        raise UsageError(f"--output {out}: give a file name in an existing directory")
    check_root()  # mmdebstrap's root mode, chroot
    img = build_disk(CACHE_DIR / "disks", log=print, force=args.force)
    path, secret = img.path, img.password_file
    if out is not None:
        shutil.copyfile(img.path, out)
        secret = password_file(out)
        secret.touch(mode=0o600)
        secret.write_text(img.password_file.read_text())
        path = out
    print(f"disk image {path} (kernel {img.kernel_version}, DPDK {img.dpdk_version})")
    print(f"login {img.user}, password in {secret}")
    print(f"boot it with: vhostlm run --guest-image {path}")
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    """`vhostlm image build`."""
    from vhostlm.image.build import build_image
    from vhostlm.runner import CACHE_DIR

    if args.image_command == "disk":
        return cmd_image_disk(args)
    if args.image_command != "build":
        raise UsageError("image: say build or disk")
    img = build_image(CACHE_DIR / "images", log=print, force=args.force)
    print(f"kernel {img.kernel}\ninitrd {img.initrd}\nguest kernel {img.kernel_version}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: exit 0 pass, 1 fail, 2 usage or configuration error, 130 interrupted."""
    try:
        args = build_parser().parse_args(argv)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "list":
            return cmd_list()
        if args.command == "report":
            return cmd_report(args)
        if args.command == "lab":
            return cmd_lab(args)
        if args.command == "image":
            return cmd_image(args)
        if args.command == "doctor":
            return cmd_doctor(args)
        raise UsageError(
            "say what to do: run, list, report, lab, image or doctor (see `vhostlm --help`)"
        )
    except UsageError as exc:
        print(f"vhostlm: error: {exc}", file=sys.stderr)
        return 2
    except SetupError as exc:
        print(f"vhostlm: setup failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vhostlm: interrupted; everything the run started was removed", file=sys.stderr)
        return 130
