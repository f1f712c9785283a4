"""The CLI's own output: `list`. Bad input (one line, exit 2) is tests/unit/test_bad_input.py."""

from __future__ import annotations

import pytest

from vhostlm.cli import main


def test_list_shows_each_case_with_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "virtio_pmd" in out and "virtio_net" in out
    assert "testpmd" in out and "virtio-net" in out
