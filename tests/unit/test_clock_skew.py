"""`lab up --ssh --clock-skew`: the option's checks, and that its sshd line really skews.

The skew is applied by Debian's libfaketime (installed by `make deps`): the test runs a
program under the very environment the sshd line sets and reads its clock.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vhostlm.errors import UsageError
from vhostlm.testbed.sshlab import SSHD, parse_skew, skew_env, sshd_config


def test_a_role_and_seconds_are_parsed() -> None:
    assert parse_skew("backup=-2.5") == ("backup", -2.5)
    assert parse_skew("host=3") == ("host", 3.0)


@pytest.mark.parametrize(
    "text", ["tester=1", "switch=1", "backup", "backup=", "backup=soon", "host=1e6", "host=nan"]
)
def test_bad_skews_name_the_form_and_the_roles(text: str) -> None:
    with pytest.raises(UsageError, match=r"ROLE=SECONDS with ROLE host or backup") as info:
        parse_skew(text)
    assert repr(text) in str(info.value)


def test_the_sshd_line_shifts_the_wall_clock_and_not_the_monotonic_one() -> None:
    line = skew_env(-2.5)
    assert line.startswith("SetEnv ")
    env = dict(os.environ)
    env.update(dict(kv.split("=", 1) for kv in line.removeprefix("SetEnv ").split()))
    probe = "import time; print(time.time(), time.monotonic())"
    before_wall, before_mono = time.time(), time.monotonic()
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, check=True).stdout.split()  # fmt: skip
    wall, mono = float(out[0]), float(out[1])
    assert -2.5 - 0.5 < wall - before_wall < -2.5 + 0.5  # the process took < 0.5 s
    assert 0 <= mono - before_mono < 0.5  # monotonic time is the real one


def test_sshd_accepts_the_config_with_the_skew(tmp_path: Path) -> None:
    key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = tmp_path / "sshd.conf"
    config.write_text(sshd_config("127.0.0.1", key, tmp_path / "authorized", tmp_path / "pid",
                                  [skew_env(1.5)]))  # fmt: skip
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    done = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    dump = subprocess.run([SSHD, "-T", "-f", str(config)], capture_output=True, text=True)
    assert "setenv LD_PRELOAD=" in dump.stdout and "FAKETIME=+1.5" in dump.stdout


def test_lab_up_refuses_a_skew_without_ssh() -> None:
    argv = [sys.executable, "-m", "vhostlm", "lab", "up", "--clock-skew", "backup=1"]
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "vhostlm: error: --clock-skew needs --ssh: it skews a node's SSH sessions"
    ]
