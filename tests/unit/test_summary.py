"""Tests of the end-of-run summary table."""

from __future__ import annotations

import re

from vhostlm.report.results import (
    CaseResult,
    MigrationFigures,
    RunResult,
    StepResult,
    TrafficFigures,
)
from vhostlm.report.summary import render_summary

CI_RESULT_LINE = re.compile(r"^\s*\d+ passed, \d+ failed")


def make_run(second_verdict: str = "pass") -> RunResult:
    pmd = CaseResult(
        name="virtio_pmd",
        duration_s=31.4,
        steps=[
            StepResult("vhost_connected", "pass", "VHOST_CONFIG: new device, handle is 0"),
            StepResult("migration_completed", "pass", "status completed"),
        ],
        migration=MigrationFigures("completed", 4210, 45, 3, 118489088),
        traffic=TrafficFigures(5000, 800, 2100, 900),
    )
    net = CaseResult(
        name="virtio_net",
        duration_s=20.9,
        steps=[
            StepResult("link_up", "pass", "eth0 UP"),
            StepResult("received_after", second_verdict, "counter stayed at 0\nafter migration"),  # type: ignore[arg-type]
        ],
        migration=MigrationFigures("completed", 3900, 38, 2, 100 * 1024 * 1024),
        traffic=TrafficFigures(4000, 700, 1500, 0),
    )
    for case in (pmd, net):
        case.finish()
    return RunResult(
        started="2024-05-01T10:11:12+00:00",
        duration_s=41.2,
        accel="tcg",
        cases=[pmd, net],
        output_dir="results/20240501-101112",
    )


def test_has_header_and_one_row_per_step() -> None:
    text = render_summary(make_run())
    lines = text.splitlines()
    assert re.match(r"^case\s+\| step\s+\| verdict \| detail$", lines[0])
    for case, step in [
        ("virtio_pmd", "vhost_connected"),
        ("virtio_pmd", "migration_completed"),
        ("virtio_net", "link_up"),
        ("virtio_net", "received_after"),
    ]:
        rows = [ln for ln in lines if re.match(rf"^{case}\s+\| {step}\s+\| PASS\s+\| ", ln)]
        assert len(rows) == 1, (case, step, text)


def test_figures_line_per_case() -> None:
    text = render_summary(make_run())
    assert (
        "virtio_pmd: PASS in 31.4 s; migration completed, total 4210 ms, downtime 45 ms, "
        "RAM 113.0 MiB; traffic sent 5000, before 800, during 2100, after 900"
    ) in text
    assert (
        "downtime 38 ms, RAM 100.0 MiB; traffic sent 4000, before 700, during 1500, after 0" in text
    )


def test_result_line_and_path_on_pass() -> None:
    lines = render_summary(make_run()).splitlines()
    assert lines[-2] == "result: PASS (2 cases: 2 pass, 0 fail, 0 error, 0 skip) in 41.2 s"
    assert lines[-1] == "results: results/20240501-101112/results.json"


def test_failure_shows_reason_and_fail_result() -> None:
    text = render_summary(make_run("fail"))
    assert re.search(
        r"^virtio_net\s+\| received_after\s+\| FAIL\s+\| counter stayed at 0 after migration$",
        text,
        re.M,
    )
    assert "  reason: received_after: counter stayed at 0 after migration" in text
    assert "result: FAIL (2 cases: 1 pass, 1 fail, 0 error, 0 skip) in 41.2 s" in text


def test_never_prints_ci_result_line() -> None:
    for verdict in ("pass", "fail", "error", "skip"):
        run = make_run(verdict)
        run.cases[0].steps.append(StepResult("", "pass", ""))
        run.cases.append(CaseResult(name="3 passed, 1 failed", verdict="skip"))
        for color in (False, True):
            for line in render_summary(run, color=color).splitlines():
                assert not CI_RESULT_LINE.match(line), line


def test_color_only_when_asked() -> None:
    assert "\x1b[" not in render_summary(make_run("fail"))
    colored = render_summary(make_run("fail"), color=True)
    assert "\x1b[32mPASS\x1b[0m" in colored
    assert "\x1b[31mFAIL\x1b[0m" in colored


def test_case_without_steps_gets_a_row() -> None:
    run = RunResult(
        started="2024-05-01T10:11:12+00:00",
        cases=[CaseResult(name="virtio_net", verdict="error", reason="QEMU did not boot")],
    )
    text = render_summary(run)
    assert re.search(r"^virtio_net \| -\s+\| ERROR\s+\| QEMU did not boot$", text, re.M)
    assert "result: FAIL (1 case: 0 pass, 0 fail, 1 error, 0 skip) in 0.0 s" in text
    assert "results:" not in text  # no output dir known
