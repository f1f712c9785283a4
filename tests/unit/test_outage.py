"""Gap and loss maths of the probe stream, on synthetic streams."""

from __future__ import annotations

import pytest

from vhostlm.measure.outage import analyse, count_duplicates_reordered, largest_gap

PPS = 1000.0
RTT = 0.0002


def stream(n: int, lost: set[int] = frozenset(), t0: float = 100.0):  # type: ignore[assignment]
    send = [t0 + i / PPS for i in range(n)]
    replies = [(i, send[i] + RTT) for i in range(n) if i not in lost]
    return send, replies


def test_clean_stream_has_no_loss_and_outage_of_one_interval() -> None:
    send, replies = stream(1000)
    fig = analyse(send, replies, PPS)
    assert (fig.sent, fig.replies, fig.lost, fig.duplicates, fig.reordered) == (1000, 1000, 0, 0, 0)
    assert fig.outage_ms == pytest.approx(1.0, abs=0.01)
    assert fig.resolution_ms == 1.0


def test_loss_in_the_middle_is_the_outage() -> None:
    send, replies = stream(1000, lost=set(range(400, 450)))
    fig = analyse(send, replies, PPS)
    assert fig.lost == 50
    assert fig.outage_ms == pytest.approx(51.0, abs=0.01)  # reply 399 .. reply 450
    assert fig.outage_start == pytest.approx(send[399] + RTT)
    assert fig.outage_end == pytest.approx(send[450] + RTT)


def test_loss_at_the_start_counts_from_the_first_probe() -> None:
    send, replies = stream(1000, lost=set(range(0, 30)))
    fig = analyse(send, replies, PPS)
    assert fig.lost == 30
    assert fig.outage_start == send[0]
    assert fig.outage_ms == pytest.approx(30.2, abs=0.01)


def test_loss_at_the_end_counts_to_the_last_probe() -> None:
    send, replies = stream(1000, lost=set(range(980, 1000)))
    fig = analyse(send, replies, PPS)
    assert fig.lost == 20
    assert fig.outage_end == send[-1]
    assert fig.outage_ms == pytest.approx(20.0 - 0.2, abs=0.01)


def test_stream_that_never_recovers() -> None:
    send, replies = stream(2000, lost=set(range(500, 2000)))
    fig = analyse(send, replies, PPS)
    assert fig.lost == 1500
    assert fig.outage_ms == pytest.approx(1499.8, abs=0.01)


def test_no_reply_at_all_is_one_outage_over_the_whole_stream() -> None:
    send, _ = stream(100)
    fig = analyse(send, [], PPS)
    assert fig.replies == 0 and fig.lost == 100
    assert fig.outage_ms == pytest.approx(99.0, abs=0.01)


def test_empty_stream() -> None:
    fig = analyse([], [], PPS)
    assert (fig.sent, fig.replies, fig.lost, fig.outage_ms) == (0, 0, 0, 0.0)


def test_duplicates_and_reordering() -> None:
    assert count_duplicates_reordered([0, 1, 2, 3]) == (0, 0)
    assert count_duplicates_reordered([0, 2, 1, 3, 3, 2]) == (2, 1)
    send, replies = stream(10)
    shuffled = [replies[0], replies[2], replies[1], *replies[3:], replies[5]]
    fig = analyse(send, shuffled, PPS)
    assert (fig.replies, fig.duplicates, fig.reordered, fig.lost) == (10, 1, 1, 0)


def test_window_picks_the_gap_of_the_migration_and_counts_loss_outside() -> None:
    lost = set(range(100, 200)) | set(range(600, 640)) | {900}
    send, replies = stream(1000, lost=lost)
    window = (send[550], send[700])
    fig = analyse(send, replies, PPS, [window])
    assert fig.outage_ms == pytest.approx(41.0, abs=0.01)  # the gap inside the window
    assert fig.lost == 141
    assert fig.lost_outside_window == 101  # 100..199 and 900
    whole = analyse(send, replies, PPS)
    assert whole.outage_ms == pytest.approx(101.0, abs=0.01)


def test_largest_gap_ignores_gaps_outside_the_window() -> None:
    assert largest_gap([1.0, 2.0, 5.0, 5.5], 0.0, 6.0, window=(5.2, 5.8)) == (5.0, 5.5)
    assert largest_gap([1.0, 2.0, 5.0, 5.5], 0.0, 6.0) == (2.0, 5.0)


def test_several_windows_take_the_worst_gap_and_count_loss_outside_all() -> None:
    lost = set(range(100, 130)) | set(range(500, 520)) | {800}
    send, replies = stream(1000, lost=lost)
    fig = analyse(send, replies, PPS, [(send[90], send[140]), (send[490], send[530])])
    assert fig.outage_ms == pytest.approx(31.0, abs=0.01)
    assert fig.lost_outside_window == 1  # only 800
