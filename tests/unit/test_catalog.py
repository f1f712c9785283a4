"""Plans, case names, docstrings and -k selection."""

from __future__ import annotations

import pytest

from vhostlm.errors import UsageError
from vhostlm.plans.catalog import PLANS, all_cases, matches, select_cases


def test_every_case_has_a_unique_name_and_steps_verify_docstring() -> None:
    names = [c.name for c in PLANS["all"]]
    assert len(names) == len(set(names)) == 23  # 19, and the reconnect plan's 4
    for case in PLANS["all"]:
        doc = case.doc
        assert "Steps:" in doc and "Verify:" in doc, case.name
        assert case.description()


def test_dts_plan_has_the_eight_cases() -> None:
    assert len(PLANS["dts"]) == 8
    packed = [c for c in PLANS["dts"] if c.packed]
    assert {c.name for c in packed} == {c.name for c in PLANS["dts"] if c.name.startswith("packed")}
    assert {c.queues for c in PLANS["dts"]} == {1, 4}


@pytest.mark.parametrize(
    ("expr", "name", "want"),
    [
        ("net", "split_virtio_net", True),
        ("pmd", "split_virtio_net", False),
        ("packed and not mq4", "packed_virtio_net", True),
        ("packed and not mq4", "packed_virtio_net_mq4", False),
        ("(split or packed) and pmd", "split_virtio_pmd_vhost_late", True),
        ("not (split or packed)", "virtio_net", True),
    ],
)
def test_keyword_expressions(expr: str, name: str, want: bool) -> None:
    assert matches(expr, name) is want


def test_selection_and_its_errors() -> None:
    assert [c.name for c in select_cases("dts", [], "packed and net and not mq4")] == [
        "packed_virtio_net"
    ]
    assert [c.name for c in select_cases("seed", ["cancel_virtio_net"], None)] == [
        "cancel_virtio_net"
    ]
    with pytest.raises(UsageError, match="selects no case"):
        select_cases("seed", [], "nothing_like_this")
    with pytest.raises(UsageError, match="cannot read"):
        select_cases("all", [], "net and (")
    with pytest.raises(UsageError, match="unknown case"):
        select_cases("all", ["nope"], None)
    assert set(all_cases()) == {c.name for c in PLANS["all"]}
