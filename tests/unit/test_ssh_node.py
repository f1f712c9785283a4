"""SSH command lines: every argument quoted, so a hostile value stays one argument."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from vhostlm.nodes.ssh import WRAPPER, SshNode


def test_hostile_value_is_one_quoted_argument(tmp_path: Path) -> None:
    node = SshNode("host", "192.0.2.1")
    hostile = "; touch /tmp/pwned-vhostlm-unit"
    line = node.command(["echo", hostile])
    assert shlex.split(line) == ["echo", hostile]
    # and a real shell, as sshd would run it, prints it instead of running it
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True).stdout
    assert out.strip() == hostile
    assert not Path("/tmp/pwned-vhostlm-unit").exists()


def test_sudo_prefix_and_pid_wrapper() -> None:
    node = SshNode("backup", "192.0.2.2", user="ops", sudo=True)
    assert node.command(["id", "-u"]) == "sudo -n id -u"
    assert node.label == "backup (ops@192.0.2.2:22)"
    line = node.command([*WRAPPER, "printf", "%s", "a b"])
    out = subprocess.run(["sh", "-c", line.removeprefix("sudo -n ")], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    first, rest = out.split("\n", 1)
    assert first.startswith("@@vhostlm-pid ") and first.split()[1].isdigit()
    assert rest == "a b"
