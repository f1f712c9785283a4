"""The tester node's traffic: the seed's UDP stream or the probe stream, as one owned process.

The sender and probe scripts only need Python and scapy, so they are copied to the
tester's run directory and run there with the node's Python; the probe's data file is
fetched back when it stops.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from vhostlm.addresses import SEED_DST_IP, TESTER_IP
from vhostlm.measure import probe, sender
from vhostlm.nodes.base import Node, NodeProcess
from vhostlm.rundir import RunDir

PROGRESS_RE = re.compile(r"sent (\d+)(?: replies (\d+))?\n")  # whole lines only


class Tester:
    """Sends continuously from the tester node for a whole case."""

    def __init__(
        self,
        name: str,
        rundir: RunDir,
        node: Node,
        iface: str,
        dst_mac: str,
        pps: float,
        probe_ips: tuple[str, str] | None,
        python: str,
        workdir: str,
        seed_ips: tuple[str, str] = (TESTER_IP, SEED_DST_IP),
        probe_size: int = probe.DEFAULT_SIZE,
    ) -> None:
        """`probe_size`: frame bytes of each probe (probe.py --size; checked by the lead's
        option validation with payload.check_probe_size)."""
        self.node = node
        self.probes = probe_ips is not None
        self.data_path = rundir.path / f"{name}.json"
        self.remote_data = f"{workdir}/{name}.json"
        script = Path(probe.__file__ if self.probes else sender.__file__)
        self.script = (script, f"{workdir}/{script.name}")
        if probe_ips is not None:
            argv = [python, self.script[1], "--iface", iface,
                    "--dst-mac", dst_mac, "--src-ip", probe_ips[0], "--dst-ip", probe_ips[1],
                    "--pps", str(pps), "--size", str(probe_size),
                    "--out", self.remote_data]  # fmt: skip
        else:
            argv = [python, self.script[1], "--iface", iface, "--dst", dst_mac, "--src-ip",
                    seed_ips[0], "--dst-ip", seed_ips[1], "--pps", str(pps)]  # fmt: skip
        self.process: NodeProcess = node.process(name, argv, rundir)

    def start(self) -> Tester:
        """Copy the script to the tester, start sending; wait for its first progress line."""
        self.node.put(*self.script)
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
        """Stop sending; the probe data (send and reply times, payload findings under
        "payload"), or {} for the seed stream."""
        self.process.stop()
        if self.probes and self.node.exists(self.remote_data):
            self.node.get(self.remote_data, self.data_path)
            data: dict[str, Any] = json.loads(self.data_path.read_text())
            return data
        return {}

    @property
    def log(self) -> Path:
        """The tester's log file."""
        return self.process.rundir.log_path(self.process.name)
