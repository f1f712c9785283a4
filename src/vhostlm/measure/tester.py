"""The tester node's traffic: the seed's UDP stream or the probe stream, as one owned process."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from vhostlm.apps.process import Process
from vhostlm.rundir import RunDir

PROGRESS_RE = re.compile(r"sent (\d+)(?: replies (\d+))?\n")  # whole lines only


class Tester:
    """Sends continuously from the tester namespace for a whole case."""

    def __init__(
        self,
        name: str,
        rundir: RunDir,
        netns: str,
        iface: str,
        dst_mac: str,
        pps: float,
        probe_ips: tuple[str, str] | None,
    ) -> None:
        self.probes = probe_ips is not None
        self.data_path = rundir.path / f"{name}.json"
        if probe_ips is not None:
            argv = [sys.executable, "-m", "vhostlm.measure.probe", "--iface", iface,
                    "--dst-mac", dst_mac, "--src-ip", probe_ips[0], "--dst-ip", probe_ips[1],
                    "--pps", str(pps), "--out", str(self.data_path)]  # fmt: skip
        else:
            argv = [sys.executable, "-m", "vhostlm.measure.sender", "--iface", iface,
                    "--dst", dst_mac, "--pps", str(pps)]  # fmt: skip
        self.process = Process(name, argv, rundir, netns=netns)

    def start(self) -> Tester:
        """Start sending; wait for its first progress line."""
        self.process.start()
        self.process.expect(r"sent \d+", 15)
        return self

    def progress(self) -> tuple[int, int]:
        """(sent, replies) as last reported."""
        found = PROGRESS_RE.findall(self.process.output.text())
        if not found:
            return 0, 0
        sent, replies = found[-1]
        return int(sent), int(replies or 0)

    def stop(self) -> dict[str, Any]:
        """Stop sending; the probe data (send and reply times), or {} for the seed stream."""
        self.process.stop()
        if self.probes and self.data_path.exists():
            data: dict[str, Any] = json.loads(self.data_path.read_text())
            return data
        return {}

    @property
    def log(self) -> Path:
        """The tester's log file."""
        return self.process.rundir.log_path(self.process.name)
