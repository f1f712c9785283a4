"""Bad input gives one line naming what is wrong, exit 2, and starts nothing."""

from __future__ import annotations

import pytest

from vhostlm.cli import main


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--case", "nope"], "unknown case 'nope'"),
        (["run", "--pps", "-3"], "--pps"),
        (["run", "--pps", "fast"], "--pps"),
        (["run", "--guest-mem", "0"], "--guest-mem"),
        (["run", "--dst-mac", "52:54:00"], "MAC address"),
        (["run", "--plan", "huge"], "--plan"),
        (["frobnicate"], "invalid choice"),
        ([], "say what to do"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_list_shows_each_case_with_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "virtio_pmd" in out and "virtio_net" in out
    assert "testpmd" in out and "virtio-net" in out
