"""Gap and loss maths of the probe stream, on synthetic streams; what the figure is worth."""

from __future__ import annotations

import math
from typing import Any

import pytest

from vhostlm.errors import SetupError, StepFailed
from vhostlm.measure.outage import (
    analyse,
    count_duplicates_reordered,
    largest_gap,
    noise_floor,
    percentile,
    switch_window,
)
from vhostlm.plans.traffic import check_measurement, probe_figures

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


# --- the switch-over window, noise floor, uncertainty and the tester's own health --------
# Synthetic streams as probe.py dumps them, with the marks a migration records: migrate at
# 101 s, the source's STOP at 105 s, the destination's RESUME at 105.03 s.

MARKS = {"migrate": 101.0, "active": 101.01, "stop": 105.0, "resume": 105.03, "completed": 105.05}


def dump(
    n: int = 8000,
    down: tuple[float, float] = (105.0, 105.05),
    rtt: float = RTT,
    hold: set[int] = frozenset(),  # type: ignore[assignment]
    extra_down: list[tuple[float, float]] | None = None,
    burst: float = 0.0,
    send: list[float] | None = None,
    drop: set[int] = frozenset(),  # type: ignore[assignment]
    rx: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A probe dump: probes every ms from 100 s (or at `send`); the guest answers each
    within `rtt` unless its request passes while the path is `down` (or in `extra_down`,
    or it is in `drop`); requests in `hold` wait and are answered as the path comes back.
    With `burst`, replies leave the guest only at multiples of `burst` s (TCG's bursts)."""
    send_ts = send if send is not None else [100.0 + i / PPS for i in range(n)]
    spans = [down, *(extra_down or [])]
    replies = []
    for seq, ts in enumerate(send_ts):
        at = ts + rtt
        if seq in drop:
            continue
        if any(a <= ts < b for a, b in spans):
            if seq not in hold:
                continue
            at = next(b for a, b in spans if a <= ts < b) + rtt
        if burst:
            at = math.ceil(at / burst) * burst
        replies.append((seq, at))
    replies.sort(key=lambda r: r[1])
    data: dict[str, Any] = {
        "pps": PPS, "t0": send_ts[0], "sent": len(send_ts), "send_ts": send_ts,
        "replies": [[s, t] for s, t in replies],
    }  # fmt: skip
    if rx is not None:
        data["rx"] = rx
    return data


def figures(data: dict[str, Any], marks: dict[str, float] = MARKS) -> dict[str, Any]:
    measure, legs = probe_figures(data, [dict(marks)], PPS)
    measure["legs"] = legs
    measure["pps"] = PPS  # the rate asked, as Traffic.finish puts it
    return measure


def test_the_window_opens_a_margin_before_stop_and_closes_a_settle_after_resume() -> None:
    m = figures(dump())
    margin = 3 / PPS + m["noise_ms"]["p99"] / 1000
    assert m["window"] == pytest.approx([105.0 - margin, 105.03 + 1.0])
    assert m["outage_ms"] == pytest.approx(51.0, abs=0.01)  # reply 4999 .. reply 5050
    assert m["lost"] == 50 and m["lost_outside_window"] == 0
    assert m["noise_ms"] == {
        "p99": pytest.approx(1.0, abs=0.01),
        "max": pytest.approx(1.0, abs=0.01),
    }
    assert m["outage_uncertainty_ms"] == pytest.approx(3.0, abs=0.01)  # interval x 2 + p99
    assert m["below_noise"] is False and m["send_gap_ms"] == pytest.approx(1.0, abs=0.01)
    assert m["precopy_max_gap_ms"] == pytest.approx(1.0, abs=0.01)
    assert m["tester_drops"] == 0 and m["tester_drops_in_window"] == 0
    assert m["legs"][0]["outage_ms"] == m["outage_ms"]
    assert "outage 51.0 ms ± 3.0 ms" in check_measurement(m)


def test_a_precopy_hiccup_bigger_than_the_outage_is_not_picked() -> None:
    m = figures(dump(extra_down=[(102.0, 102.2)]))
    assert m["outage_ms"] == pytest.approx(51.0, abs=0.01)  # not the 200 ms hiccup
    assert m["precopy_max_gap_ms"] == pytest.approx(201.0, abs=0.01)
    assert m["lost"] == 250
    # the old window (migrate .. resume + settle) took the hiccup for the outage
    old = analyse(dump(extra_down=[(102.0, 102.2)])["send_ts"], [
        (s, t) for s, t in dump(extra_down=[(102.0, 102.2)])["replies"]
    ], PPS, [(101.0, 106.03)])  # fmt: skip
    assert old.outage_ms == pytest.approx(201.0, abs=0.01)
    # its loss is the precopy's (the migration's CPU, a throttled guest): reported apart,
    # not unexplained loss
    assert m["lost_outside_window"] == 0 and m["lost_during_precopy"] == 200
    assert "200 probes lost during the precopy" in check_measurement(m)


def test_lost_probes_outside_the_window_fail_the_case() -> None:
    m = figures(dump(drop={300, 7000, 7001}))
    assert m["lost"] == 53 and m["lost_outside_window"] == 3
    assert m["lost_outside_at"] == pytest.approx([100.3, 107.0, 107.001])
    with pytest.raises(
        StepFailed, match=r"^3 probes lost outside .*: sent at 0\.300, 7\.000, 7\.001 s"
    ):
        check_measurement(m)


def test_loss_in_the_margin_before_stop_is_the_switch_overs() -> None:
    # STOP - margin is 104.996 here: a request lost at 104.997 belongs to the switch-over,
    # one lost at 104.990 (the path still fine after it) does not
    assert figures(dump(drop={4997}))["lost_outside_window"] == 0
    assert figures(dump(drop={4997}))["lost_during_precopy"] == 0
    before = figures(dump(drop={4990}))
    assert before["lost_outside_window"] == 0 and before["lost_during_precopy"] == 1


def test_a_tester_stall_at_the_end_of_the_outage_is_an_error_naming_it() -> None:
    # the path is down 105.00-105.02; the tester sends nothing from 105.010 to 105.097
    send = [100.0 + i / PPS for i in range(5010)] + [105.097 + i / PPS for i in range(2000)]
    m = figures(dump(send=send, down=(105.0, 105.02)))
    assert m["outage_ms"] == pytest.approx(98.0, abs=0.01)  # 104.9992 .. 105.0972
    assert m["send_gap_ms"] == pytest.approx(88.0, abs=0.01)
    assert m["send_gap_edges_ms"] == pytest.approx([1.0, 88.0], abs=0.01)
    assert m["outage_uncertainty_ms"] == pytest.approx(90.0, abs=0.01)
    with pytest.raises(SetupError, match=r"the tester stopped sending for 88 ms at the end of the"
                       r" outage: the 98 ms outage is the tester's"):  # fmt: skip
        check_measurement(m)
    with pytest.raises(SetupError, match=r"the tester fell behind its rate: \d+ of the 1000 "):
        check_measurement(m)  # 88 ms of 1 s in the window not sent


def test_the_rate_achieved_is_reported_and_a_tester_behind_it_says_so() -> None:
    m = figures(dump())
    assert m["achieved_pps"] == pytest.approx(1000.0) and m["window_pps"] == pytest.approx(1000.0)
    assert m["legs"][0]["window_pps"] == m["window_pps"]
    assert "sent 1000 of the 1000 probes/s asked" in check_measurement(m)
    # 1000 asked, 800 sent, evenly: fewer probes, each edge 1.25 ms from the next send,
    # which the uncertainty takes; no error, and the detail says it fell behind
    slow = figures(dump(send=[100.0 + i / 800 for i in range(6400)]))
    assert slow["achieved_pps"] == pytest.approx(800.0) and slow["window_pps"] == pytest.approx(
        800.0
    )
    assert slow["outage_uncertainty_ms"] == pytest.approx(3.75, abs=0.01)  # 1.25 x 3
    detail = check_measurement(slow)
    assert "the tester fell behind its rate: 800 of the 1000 probes/s asked (800 in the " in detail
    # on time over the stream but behind in the window alone: said too
    late = [100.0 + i / PPS for i in range(4900)] + [104.9 + i / 500 for i in range(1000)]
    late += [106.9 + i / PPS for i in range(1000)]
    m = figures(dump(send=late))
    assert m["window_pps"] == pytest.approx(500.0, abs=1) and m["achieved_pps"] > 750
    assert "the tester fell behind its rate" in check_measurement(m)


def test_a_tester_stall_in_the_middle_of_the_outage_does_not_move_it() -> None:
    # the path is down 105.00-105.20; the tester pauses 105.05-105.137: probes after it are
    # still lost, so the outage is the guest's and only the largest send gap says so
    send = [100.0 + i / PPS for i in range(5050)] + [105.137 + i / PPS for i in range(2000)]
    m = figures(dump(send=send, down=(105.0, 105.2)))
    assert m["outage_ms"] == pytest.approx(201.0, abs=0.01)
    assert m["send_gap_ms"] == pytest.approx(88.0, abs=0.01)
    assert m["send_gap_edges_ms"] == pytest.approx([1.0, 1.0], abs=0.01)
    detail = check_measurement(m)
    assert "outage 201.0 ms" in detail and "the tester paused 88 ms inside it" in detail


def test_requests_held_across_the_switch_over_set_the_end_not_the_tester() -> None:
    # vhost-user keeps the requests queued in the ring: answered when the guest runs again
    m = figures(dump(hold=set(range(5000, 5010))))
    assert m["outage_ms"] == pytest.approx(51.0, abs=0.01)  # reply 4999 .. held 5000
    assert m["lost"] == 40
    assert m["send_gap_edges_ms"] == [pytest.approx(1.0, abs=0.01), 0.0]


def test_a_bursty_guest_raises_the_noise_floor_and_a_small_outage_is_below_it() -> None:
    # replies leave in bursts every 20 ms (a TCG vCPU's time slice), the path down 15 ms
    m = figures(dump(down=(105.0, 105.015), burst=0.020))
    assert m["noise_ms"]["p99"] == pytest.approx(20.0, abs=0.01)
    assert m["outage_ms"] == pytest.approx(20.0, abs=0.01)
    assert m["below_noise"] is True
    assert m["outage_uncertainty_ms"] == pytest.approx(22.0, abs=0.01)
    detail = check_measurement(m)
    assert "below the noise floor" in detail and "noise p99 20.0 ms" in detail
    big = figures(dump(down=(105.0, 105.3), burst=0.020))
    assert big["below_noise"] is False and "below" not in check_measurement(big)


def test_a_receiver_burst_is_no_gap_with_kernel_stamps() -> None:
    # the tester's receive thread stalls 105.0-105.1: with kernel stamps the replies keep
    # their arrival times (what it read late shows only as receive lag), the path is fine
    data = dump(down=(0.0, 0.0))
    lags = [max(0.0, 105.1 - t) * 1000 if 105.0 <= t < 105.1 else 0.05 for _, t in data["replies"]]
    data["rx"] = {"clock": "kernel", "drops": 0, "drop_log": [], "read_lag_ms": lags}
    m = figures(data)
    assert m["outage_ms"] == pytest.approx(1.0, abs=0.01)
    assert m["below_noise"] is True and m["timestamps"] == "kernel"
    assert m["receive_lag_ms"]["max"] == pytest.approx(100.0, abs=0.5)


def test_tester_drops_in_the_window_are_an_error_not_guest_loss() -> None:
    rx = {"clock": "kernel", "drops": 7, "drop_log": [[104.95, 105.05, 5], [102.0, 102.1, 2]]}
    m = figures(dump(rx=rx))
    assert m["tester_drops"] == 7 and m["tester_drops_in_window"] == 5
    assert m["lost"] == 50  # the guest's loss: drops are counted apart
    with pytest.raises(SetupError, match="the tester's receive socket dropped 5 frames in the"):
        check_measurement(m)
    outside = figures(dump(rx={**rx, "drops": 2, "drop_log": [[102.0, 102.1, 2]]}))
    assert outside["tester_drops"] == 2 and outside["tester_drops_in_window"] == 0
    assert "2 tester drops" in check_measurement(outside)


def test_a_window_that_never_recovers_runs_to_the_last_probe() -> None:
    m = figures(dump(down=(105.0, 200.0)), {**MARKS, "resume": 105.03})
    assert m["outage_ms"] == pytest.approx(2999.8, abs=0.01)  # reply 4999 .. the last send
    assert m["outage_end"] == pytest.approx(107.999)
    assert m["lost"] == 3000 and m["lost_outside_window"] == 0  # lost inside the gap itself
    assert m["send_gap_edges_ms"] == [pytest.approx(1.0, abs=0.01), 0.0]


def test_replies_out_of_range_are_ignored() -> None:
    data = dump()
    data["replies"] += [[-1, 105.01], [8000, 105.02], [2**40, 105.03]]
    m = figures(data)
    assert m["replies"] == 7950 and m["outage_ms"] == pytest.approx(51.0, abs=0.01)


def test_without_a_stop_the_window_is_the_whole_migration() -> None:
    marks = {"migrate": 101.0, "cancelled": 103.0}
    window, precopy = switch_window(marks, 100.0, 108.0, PPS, 5.0, 1.0)
    assert window == (101.0, 104.0) and precopy is None
    window, precopy = switch_window(MARKS, 100.0, 108.0, PPS, 5.0, 1.0)
    assert window == pytest.approx((104.992, 106.03)) and precopy == pytest.approx((101.0, 104.992))


def test_a_backend_ready_after_resume_moves_the_settle_to_it() -> None:
    """The destination's ring enabled 1.2 s after RESUME: the window closes a settle after
    it; a ring ready before RESUME changes nothing."""
    late = {**MARKS, "ready": 106.2}
    window, _ = switch_window(late, 100.0, 108.0, PPS, 5.0, 1.0)
    assert window == pytest.approx((104.992, 107.2))
    early = {**MARKS, "ready": 105.01}
    assert switch_window(early, 100.0, 108.0, PPS, 5.0, 1.0)[0] == pytest.approx((104.992, 106.03))
    # probes lost in the backlog's drain after the late ring are the switch-over's
    m = figures(dump(drop={6500, 6501}), late)
    assert m["lost_outside_window"] == 0
    assert figures(dump(drop={6500, 6501}))["lost_outside_window"] == 2


def test_a_postcopy_window_runs_until_the_migration_completed() -> None:
    """Postcopy: the destination resumes at 105.03 but faults pages in until completed at
    107.5; replies stalled on those faults are inside the window, not unexplained loss."""
    marks = {**MARKS, "postcopy-active": 104.9, "completed": 107.5}
    window, _ = switch_window(marks, 100.0, 108.0, PPS, 5.0, 1.0)
    assert window == pytest.approx((104.992, 108.5))
    precopy_only = {k: v for k, v in marks.items() if k != "postcopy-active"}
    assert switch_window(precopy_only, 100.0, 108.0, PPS, 5.0, 1.0)[0] == pytest.approx(
        (104.992, 106.03))  # fmt: skip


def test_noise_floor_and_percentile() -> None:
    assert percentile([], 99) == 0.0
    assert percentile(list(range(1, 101)), 99) == 99 and percentile([5.0], 99) == 5.0
    assert noise_floor([1.0, 1.001, 1.003, 1.010, 2.0], until=1.5) == {"p99": 7.0, "max": 7.0}
    assert noise_floor([1.0], until=None) == {"p99": 0.0, "max": 0.0}


def test_check_measurement_needs_probe_figures() -> None:
    with pytest.raises(StepFailed, match="no probe figures"):
        check_measurement({})
