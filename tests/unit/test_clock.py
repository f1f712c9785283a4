"""The clock offset estimator and the correction of node times (nodes/clock.py).

Exchanges are made by hand from a known offset and known delays each way; the expected
figures are worked out in the comments, not by the code under test.
"""

from __future__ import annotations

import random

import pytest

from vhostlm.nodes.clock import Clocks, NodeClock, Reading, estimate, shift_probe_data
from vhostlm.nodes.local import LocalNode


def exchange(t0: float, offset: float, there: float, back: float) -> tuple[float, float, float]:
    """(asked, node's clock, answered) for a node `offset` s ahead, `there`/`back` s away."""
    return (t0, t0 + there + offset, t0 + there + back)


def test_one_symmetric_exchange_gives_the_offset_and_half_the_round_trip() -> None:
    # asked 100.000, the node read 102.5005, answered 100.001: offset in [2.4995, 2.5005]
    got = estimate([(100.000, 102.5005, 100.001)])
    assert got.offset_s == pytest.approx(2.5, abs=1e-9)
    assert got.uncertainty_s == pytest.approx(0.0005, abs=1e-9)
    assert got.rtt_s == pytest.approx(0.001, abs=1e-9)


def test_asymmetric_delays_bias_the_middle_but_stay_inside_the_bound() -> None:
    # 4 ms to the node, 0.2 ms back, true offset -1 s: bounds [-1.0002, -0.996],
    # so the estimate is -0.9981 +- 0.0021, and the truth is 1.9 ms from its middle
    samples = [exchange(10.0 + i, -1.0, 0.004, 0.0002) for i in range(5)]
    got = estimate(samples)
    assert got.offset_s == pytest.approx(-0.9981, abs=1e-9)
    assert got.uncertainty_s == pytest.approx(0.0021, abs=1e-9)
    assert abs(got.offset_s - -1.0) <= got.uncertainty_s + 1e-12


def test_the_bounds_of_many_exchanges_intersect_tighter_than_any_one() -> None:
    # one exchange slow going (3 ms there, 0.1 back), one slow coming back (0.1, 3):
    # the first bounds the offset to [0.5 - 0.0001, 0.5 + 0.003], the second to
    # [0.5 - 0.003, 0.5 + 0.0001]: together [0.4999, 0.5001]
    got = estimate([exchange(0.0, 0.5, 0.003, 0.0001), exchange(1.0, 0.5, 0.0001, 0.003)])
    assert got.offset_s == pytest.approx(0.5, abs=1e-9)
    assert got.uncertainty_s == pytest.approx(0.0001, abs=1e-9)
    assert got.rtt_s == pytest.approx(0.0031, abs=1e-9)


def test_random_delays_never_put_the_truth_outside_the_bound() -> None:
    rng = random.Random(7)
    for _ in range(200):
        offset = rng.uniform(-5, 5)
        samples = [
            exchange(i * 0.01, offset, rng.expovariate(1 / 0.002), rng.expovariate(1 / 0.0005))
            for i in range(rng.randint(1, 64))
        ]
        got = estimate(samples)
        assert abs(got.offset_s - offset) <= got.uncertainty_s + 1e-9
        assert got.uncertainty_s <= got.rtt_s / 2 + 1e-12


def test_a_clock_stepped_mid_exchange_falls_back_to_the_fastest_exchange() -> None:
    # the node's clock jumps by 1 s between the two: the bounds [0, 0.002] and
    # [1.0, 1.01] do not meet; the 2 ms exchange alone says 0.001 +- 0.001
    samples = [(0.0, 0.002, 0.002), (1.0, 2.01, 1.01)]
    got = estimate(samples)
    assert got.offset_s == pytest.approx(0.001, abs=1e-9)
    assert got.uncertainty_s == pytest.approx(0.001, abs=1e-9)


def test_no_exchange_is_an_error() -> None:
    with pytest.raises(ValueError, match="no clock exchanges"):
        estimate([])


def reading(at: float, offset: float, spread: float = 0.0001) -> Reading:
    return Reading(at=at, offset_s=offset, uncertainty_s=spread, rtt_s=2 * spread, samples=64)


def test_offsets_are_interpolated_between_readings_and_extrapolated_past_them() -> None:
    # 1.000 s at t=1000, 1.010 s at t=1100: 100 ppm of drift
    clock = NodeClock("backup", [reading(1000.0, 1.0), reading(1100.0, 1.01, 0.0003)])
    assert clock.offset_at(1050.0) == pytest.approx(1.005)
    assert clock.offset_at(1200.0) == pytest.approx(1.02)
    assert clock.offset_at(900.0) == pytest.approx(0.99)
    assert clock.to_controller(1051.005) == pytest.approx(1050.0, abs=1e-6)
    assert clock.drift_ppm == pytest.approx(100.0)
    figures = clock.figures()
    assert figures["offset_ms"] == 1000.0
    assert figures["offset_after_ms"] == 1010.0
    assert figures["uncertainty_ms"] == 0.3
    assert figures["readings"] == 2


def test_three_readings_use_the_segment_around_the_time() -> None:
    # 0 -> 0.010 over the first 10 s, then flat: t=15 is on the flat part
    clock = NodeClock("tester", [reading(0.0, 0.0), reading(10.0, 0.01), reading(20.0, 0.01)])
    assert clock.offset_at(5.0) == pytest.approx(0.005)
    assert clock.offset_at(15.0) == pytest.approx(0.01)


def test_the_controllers_own_clock_changes_nothing() -> None:
    clock = NodeClock("host")
    assert clock.same_clock
    assert clock.to_controller(1234.5) == 1234.5
    assert clock.figures() == {"same_clock": True, "offset_ms": 0.0, "uncertainty_ms": 0.0}


def test_probe_data_is_moved_onto_the_controllers_clock() -> None:
    clock = NodeClock("tester", [reading(0.0, 2.0)])  # the tester is 2 s ahead
    data = {
        "t0": 102.0,
        "send_ts": [102.0, 102.001],
        "replies": [[0, 102.0005], [1, 102.0015]],
        "rx": {"drop_log": [[102.1, 102.2, 3]]},
    }
    shift_probe_data(data, clock)
    assert data["t0"] == pytest.approx(100.0)
    assert data["send_ts"] == pytest.approx([100.0, 100.001])
    assert [s for s, _ in data["replies"]] == [0, 1]
    assert [t for _, t in data["replies"]] == pytest.approx([100.0005, 100.0015])
    assert data["rx"]["drop_log"][0][:2] == pytest.approx([100.1, 100.2])
    assert data["rx"]["drop_log"][0][2] == 3
    assert data["clock_offset_ms"] == 2000.0


class FakeNode(LocalNode):
    """A node whose clock is `offset` s ahead, 1 ms away each way."""

    def __init__(self, name: str, offset: float) -> None:
        super().__init__(name, f"ns-{name}")
        self.offset = offset

    def clock_samples(self, python: str, count: int) -> list[tuple[float, float, float]]:
        return [exchange(50.0 + i, self.offset, 0.001, 0.001) for i in range(count)]


def test_clocks_read_remote_nodes_and_leave_local_ones_on_the_controllers_clock() -> None:
    remote, local = FakeNode("backup", -0.25), LocalNode("host", "ns-host")
    clocks = Clocks({"backup": (remote, "python3"), "host": (local, "python3")})
    clocks.read()
    clocks.read()
    assert clocks.clock("host").same_clock
    backup = clocks.clock("backup")
    assert len(backup.readings) == 2
    assert backup.readings[0].offset_s == pytest.approx(-0.25)
    assert backup.readings[0].uncertainty_s == pytest.approx(0.001)
    assert clocks.for_node(remote) is backup
    assert clocks.for_node(LocalNode("switch", "ns-sw")).same_clock
    assert clocks.figures()["host"]["same_clock"] is True
