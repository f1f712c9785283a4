"""A `vhostlm run` followed from outside, as a user or an admin would: its progress lines on
stderr, the processes its runtime record lists, and signals sent to one of them by pid."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from tests.e2e.conftest import ROOT, load

RUN_LINE_RE = re.compile(r"^run ([0-9a-f]+): output in ")


def cmdline(pid: int) -> str:
    """The command line of `pid` ('' once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class LiveRun:
    """`python -m vhostlm run --output OUT ARGS...` in the background."""

    def __init__(self, out: Path, *args: str) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vhostlm", "run", "--output", str(out), *args],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.run_id = ""
        self.stderr: list[str] = []
        self.stdout: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr, True)),
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout, False)),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()

    def _read(self, stream: IO[str], into: list[str], progress: bool) -> None:
        for line in stream:
            into.append(line)
            if progress:
                self._lines.put(line)
        if progress:
            self._lines.put(None)

    def wait_for(self, text: str, timeout: float = 240) -> None:
        """Block until a progress line contains `text` (e.g. 'virtio_net: migration_active')."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {text!r} in {timeout} s: {self.output()}") from None
            if line is None:
                raise AssertionError(f"the run ended before {text!r}: {self.output()}")
            found = RUN_LINE_RE.match(line)
            if found:
                self.run_id = found.group(1)
            if text in line:
                return

    @property
    def runtime(self) -> Path:
        """The run's private runtime directory."""
        assert self.run_id, "run id not seen yet"
        return Path("/run/vhostlm") / self.run_id

    def processes(self) -> dict[int, str]:
        """pid -> command line of every process the run's record lists and that still runs."""
        record = json.loads((self.runtime / "resources.json").read_text())
        found = {int(entry[0]): cmdline(int(entry[0])) for entry in record["pids"]}
        return {pid: cmd for pid, cmd in found.items() if cmd}

    def pid_of(self, *needles: str) -> int:
        """The one recorded process whose command line contains every needle."""
        pids = [p for p, cmd in self.processes().items() if all(n in cmd for n in needles)]
        assert len(pids) == 1, (needles, self.processes())
        return pids[0]

    def kill(self, sig: signal.Signals, *needles: str) -> int:
        """Send `sig` to the process matching `needles`; its pid."""
        pid = self.pid_of(*needles)
        os.kill(pid, sig)
        return pid

    def finish(self, timeout: float = 300) -> int:
        """Wait for vhostlm to end; its exit code."""
        rc = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(10)
        for line in self.stderr:
            found = RUN_LINE_RE.match(line)
            if found:
                self.run_id = found.group(1)
        return rc

    def output(self) -> str:
        """What the run printed so far (tail)."""
        return ("".join(self.stdout)[-3000:] + "".join(self.stderr)[-2000:]).strip()

    def case(self) -> dict[str, Any]:
        """The only case of the finished run, from results.json."""
        cases: list[dict[str, Any]] = load(self.out / "results.json")["cases"]
        assert len(cases) == 1, cases
        return cases[0]

    def stop(self) -> None:
        """Make sure the run is gone (a failed assertion must not leave it running)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.finish(10)


def steps(case: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A case's steps by name."""
    return {s["name"]: s for s in case["steps"]}
