"""Removing what a run left behind, from its records alone (also after kill -9)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

from vhostlm.rundir import RUNTIME_ROOT, proc_starttime
from vhostlm.testbed.lab import NS_PREFIX, list_namespaces, teardown_lab
from vhostlm.testbed.remote import recover_remote
from vhostlm.testbed.shell import run


def kill_recorded(pid: int, starttime: int | None, grace: float = 5.0) -> bool:
    """End `pid` if it is still the process that was recorded; True if one was ended."""
    if proc_starttime(pid) is None or (starttime is not None and proc_starttime(pid) != starttime):
        return False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc_starttime(pid) != starttime or _is_zombie(pid):
                return True
            time.sleep(0.05)
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
