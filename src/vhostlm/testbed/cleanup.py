"""Removing what a run left behind, from its records alone (also after kill -9)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from pathlib import Path

from vhostlm.rundir import RUNTIME_ROOT, proc_starttime
from vhostlm.testbed.lab import NS_PREFIX, list_namespaces, teardown_lab
from vhostlm.testbed.remote import recover_remote
from vhostlm.testbed.shell import run
from vhostlm.wait import WaitTimeout, wait_until


def kill_recorded(pid: int, starttime: int | None, grace: float = 5.0) -> bool:
    """End `pid` if it is still the process that was recorded; True if one was ended."""
    if proc_starttime(pid) is None or (starttime is not None and proc_starttime(pid) != starttime):
        return False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        with contextlib.suppress(WaitTimeout):  # not our child: no exit to wait on, so poll
            return wait_until(lambda: proc_starttime(pid) != starttime or _is_zombie(pid),
                              wait, what=f"end of pid {pid}")  # fmt: skip
    return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def teardown_runtime(runtime: Path) -> list[str]:
    """Kill recorded processes, remove the lab, sockets and the runtime directory."""
    problems: list[str] = []
    res_path = runtime / "resources.json"
    if res_path.exists():
        try:
            resources = json.loads(res_path.read_text())
        except ValueError:
            resources = {}
        problems += recover_remote(resources, runtime.name)
        for entry in reversed(resources.get("pids", [])):
            pid, start = (entry, None) if isinstance(entry, int) else (entry[0], entry[1])
            kill_recorded(int(pid), start)
    problems += teardown_lab(runtime / "lab.json")
    shutil.rmtree(runtime, ignore_errors=True)
    return problems


def owner_alive(runtime: Path) -> bool:
    """True when the vhostlm process that owns `runtime` still runs."""
    try:
        data = json.loads((runtime / "resources.json").read_text())
        pid = int(data.get("owner_pid", 0))
    except (OSError, ValueError):
        return False
    return pid > 0 and proc_starttime(pid) is not None and pid != os.getpid()


def down_all(include_live: bool = False) -> tuple[list[str], list[str]]:
    """Tear down every recorded run whose owner is gone (or all with `include_live`).

    Also removes stray `vhostlm-*` namespaces no record mentions. Returns (removed, problems).
    """
    removed: list[str] = []
    problems: list[str] = []
    if RUNTIME_ROOT.exists():
        for runtime in sorted(p for p in RUNTIME_ROOT.iterdir() if p.is_dir()):
            if owner_alive(runtime) and not include_live:
                continue
            problems += teardown_runtime(runtime)
            removed.append(runtime.name)
    live = {p.name for p in RUNTIME_ROOT.iterdir()} if RUNTIME_ROOT.exists() else set()
    for ns in list_namespaces():
        run_id = ns[len(NS_PREFIX) :].rsplit("-", 1)[0] if ns.startswith(NS_PREFIX) else None
        if run_id is not None and run_id not in live:
            run(["ip", "netns", "delete", ns], check=False)
            removed.append(ns)
    return removed, problems


def processes_mentioning(text: str) -> list[str]:
    """`pid: command line` of running processes (but this one) whose command line has `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd and str(os.getpid()) != proc.name:
            found.append(f"{proc.name}: {cmd[:120]}")
    return found


def leftovers(run_id: str) -> list[str]:
    """Everything of run `run_id` still present (processes, namespaces, runtime directory,
    mounts, hugepage files): what tests and the soak check is empty after a run."""
    runtime = RUNTIME_ROOT / run_id
    left = processes_mentioning(f"{runtime}/")
    left += [f"netns {ns}" for ns in list_namespaces() if ns.startswith(f"{NS_PREFIX}{run_id}-")]
    if runtime.exists():
        left.append(f"runtime dir {runtime}")
    if f"{runtime}/" in Path("/proc/mounts").read_text():
        left.append("hugetlbfs mount")
    left += [f"hugepage file {p}" for p in Path("/dev/hugepages").glob(f"*{run_id}*")]
    return left
