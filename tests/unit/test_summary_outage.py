"""The summary names the outage with its uncertainty and noise floor, from an analysed stream."""

from __future__ import annotations

from vhostlm.plans.traffic import probe_figures
from vhostlm.report.results import CaseResult, RunResult
from vhostlm.report.summary import render_summary

T0 = 1800000000.0
MARKS = {"migrate": T0 + 1.0, "stop": T0 + 5.0, "resume": T0 + 5.03, "completed": T0 + 5.1}


def summary(down_ms: int) -> str:
    """The summary of one case whose probes (every ms for 8 s) went unanswered for
    `down_ms` from STOP, the guest answering in 20 ms bursts (as under TCG)."""
    send = [T0 + i / 1000 for i in range(8000)]
    burst = 0.020
    replies = [
        [i, T0 + (int((t - T0 + 0.0003) / burst) + 1) * burst]
        for i, t in enumerate(send)
        if not 5000 <= i < 5000 + down_ms
    ]
    data = {"pps": 1000.0, "t0": T0, "sent": 8000, "send_ts": send, "replies": replies}
    measure, _ = probe_figures(data, [MARKS], 1000.0)
    case = CaseResult(name="virtio_net", measure=measure)
    case.finish()
    return render_summary(
        RunResult(started="2026-12-02T16:00:00+00:00", duration_s=1.0, accel="tcg", cases=[case])
    )


def test_a_real_outage_is_shown_with_its_uncertainty_and_the_noise() -> None:
    text = summary(300)
    # the path was down 300 ms; the bursts make it read 320: within the uncertainty
    assert (
        "  outage 320.0 ms ± 22.0 ms (noise p99 20.0 ms, max 20.0 ms); largest precopy gap 20.0 ms"
        in text
    )
    assert "below the noise floor" not in text


def test_an_outage_within_a_burst_says_it_is_below_the_noise_floor() -> None:
    assert (
        "outage 20.0 ms ± 22.0 ms (noise p99 20.0 ms, max 20.0 ms): below the noise floor"
        in summary(5)
    )


def test_no_line_without_probe_figures() -> None:
    case = CaseResult(name="virtio_pmd")
    case.finish()
    text = render_summary(
        RunResult(started="2026-12-02T16:00:00+00:00", duration_s=1.0, accel="tcg", cases=[case])
    )
    assert "outage" not in text
