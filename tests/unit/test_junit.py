"""Tests of the JUnit XML report and the shared key figures."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.unit.test_html import (
    HOSTILE,
    erroring_case,
    failing_case,
    passing_case,
    skipped_case,
    synthetic_run,
)
from vhostlm.report.figures import duration_text, figure_rows, mib, seconds_text, when_text
from vhostlm.report.junit import render_junit, write_junit
from vhostlm.report.results import MigrationFigures, RunResult, StepResult


@pytest.fixture(scope="module")
def run() -> RunResult:
    return synthetic_run()


@pytest.fixture(scope="module")
def root(run: RunResult) -> ET.Element:
    return ET.fromstring(render_junit(run))


def cases(root: ET.Element) -> dict[str, ET.Element]:
    return {tc.attrib["name"]: tc for tc in root.iter("testcase")}


def system_out(tc: ET.Element) -> str:
    out = tc.find("system-out")
    assert out is not None and out.text is not None
    return out.text


def test_counts_on_suites(root: ET.Element) -> None:
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    for element in (root, suite):
        counts = {k: element.attrib[k] for k in ("tests", "failures", "errors", "skipped")}
        assert counts == {"tests": "4", "failures": "1", "errors": "1", "skipped": "1"}
        assert element.attrib["time"] == "63.300"
    assert suite.attrib["name"] == "vhostlm.lab"
    assert suite.attrib["timestamp"] == "2025-11-26T10:00:20+01:00"


def test_testcase_names_classnames_times(root: ET.Element, run: RunResult) -> None:
    tcs = list(root.iter("testcase"))
    assert [tc.attrib["name"] for tc in tcs] == [c.name for c in run.cases]
    assert {tc.attrib["classname"] for tc in tcs} == {"vhostlm.seed"}
    assert tcs[0].attrib["time"] == "42.900"


def test_outcome_elements(root: ET.Element) -> None:
    tcs = cases(root)
    outcome = {n: [c.tag for c in tc if c.tag != "system-out"] for n, tc in tcs.items()}
    assert outcome == {
        "virtio_pmd": [],
        "virtio_net": ["failure"],
        "virtio_err": ["error"],
        "virtio_skip": ["skipped"],
    }


def test_failure_message_and_step_details(root: ET.Element) -> None:
    failure = cases(root)["virtio_net"].find("failure")
    assert failure is not None
    assert failure.attrib["message"] == f"receives_after_migration: {HOSTILE}"
    assert failure.attrib["type"] == "fail"
    assert failure.text is not None
    assert "step receives_after_migration: FAIL after 4.0 s" in failure.text
    assert "counter stayed at 0\n  after migration" in failure.text


def test_error_and_skip_messages(root: ET.Element) -> None:
    error = cases(root)["virtio_err"].find("error")
    assert error is not None and error.attrib["type"] == "error"
    assert error.attrib["message"] == "host_testpmd: testpmd exited with status 1"
    skipped = cases(root)["virtio_skip"].find("skipped")
    assert skipped is not None and skipped.attrib["message"] == "all steps skipped"


def test_system_out_has_steps_and_figures(root: ET.Element) -> None:
    out = system_out(cases(root)["virtio_pmd"])
    assert out.startswith("case virtio_pmd: PASS in 42.9 s\n")
    assert "  PASS  migration_completed          5.5 s  Migration status: completed" in out
    for line in (
        "measure.outage_ms: 48",
        "measure.lost: 48",
        "measure.sent: 30000",
        "measure.stop_to_resume_ms: 30",
        "measure.announce_kind: rarp",
        "measure.outage_over_downtime: 1.6",
        "migration.downtime_ms: 30",
        "migration.status: completed",
        "traffic.received_after: 10",
    ):
        assert f"\n  {line}\n" in out, line


def test_system_out_of_case_without_probes(root: ET.Element) -> None:
    out = system_out(cases(root)["virtio_skip"])
    assert "measure." not in out
    assert "migration.status: -" in out


def test_properties(root: ET.Element) -> None:
    props = {p.attrib["name"]: p.attrib["value"] for p in root.iter("property")}
    assert props["accel"] == "kvm"
    assert props["version.qemu"] == "7.2.19" and props["version.dpdk"] == "22.11.8"
    assert props["command"] == "vhostlm run --pps 1000"


def test_control_characters_are_made_visible() -> None:
    case = failing_case()
    case.steps[1].detail = "\x1b[31mred\x1b[0m and NUL \x00 here"
    root = ET.fromstring(render_junit(synthetic_run([case])))
    failure = next(root.iter("failure"))
    assert failure.text is not None and "\\x1b[31mred\\x1b[0m and NUL \\x00 here" in failure.text


def test_failed_step_fails_a_case_marked_pass() -> None:
    case = passing_case(seconds=6.0)
    case.steps.append(StepResult("late_check", "fail", "too late", 0.1))  # verdict stays "pass"
    root = ET.fromstring(render_junit(synthetic_run([case])))
    failure = next(root.iter("failure"))
    assert failure.attrib["message"] == "late_check: too late"
    assert root.attrib["failures"] == "1"


def test_plan_names_the_classname() -> None:
    run = synthetic_run([skipped_case()])
    run.plan = "custom"  # type: ignore[attr-defined]
    root = ET.fromstring(render_junit(run))
    assert next(root.iter("testcase")).attrib["classname"] == "vhostlm.custom"


def test_write_junit_is_atomic_and_parses(tmp_path: Path, run: RunResult) -> None:
    path = tmp_path / "out" / "junit.xml"
    write_junit(run, path)
    assert path.read_text(encoding="utf-8").startswith('<?xml version="1.0" encoding="UTF-8"?>')
    assert len(ET.parse(path).getroot().findall("testsuite/testcase")) == 4
    assert [p.name for p in path.parent.iterdir()] == ["junit.xml"]


def test_figure_rows_cope_with_null_measure() -> None:
    rows = {f"{r.group}.{r.key}": r for r in figure_rows(erroring_case())}
    assert rows["measure.outage_ms"].value is None and rows["measure.outage_ms"].raw == "-"
    assert rows["measure.outage_ms"].text == "—"
    assert rows["measure.outage_over_downtime"].value is None
    assert rows["measure.announce_seen"].value is None


def test_figure_rows_fall_back_to_measure_qemu() -> None:
    case = passing_case(seconds=6.0)
    case.migration = MigrationFigures()  # no query-migrate reply in the case
    case.measure["qemu"]["downtime_ms"] = 24
    rows = {f"{r.group}.{r.key}": r for r in figure_rows(case)}
    assert rows["migration.downtime_ms"].value == 24
    assert rows["measure.outage_over_downtime"].value == pytest.approx(2.0)
    assert rows["migration.total_time_ms"].text == "5500 ms"
    assert rows["migration.mbps"].value is None  # in neither
    assert rows["migration.status"].text == "—"
    assert rows["measure.loss_pct"].text == "0.8 %"


def test_zero_is_a_figure_when_qemu_answered() -> None:
    case = passing_case(seconds=6.0)
    case.migration.mbps = 0.0
    case.measure["qemu"]["mbps"] = 99.0
    rows = {f"{r.group}.{r.key}": r for r in figure_rows(case)}
    assert rows["migration.mbps"].raw == "0"


def test_figure_strings_shared_by_the_reports() -> None:
    assert seconds_text(5.46) == "5.5 s" and seconds_text(0) == "0.0 s"
    assert duration_text(119.94) == "119.9 s"
    assert duration_text(4000.5) == "66 min 40 s"
    assert mib(100 * 1024 * 1024) == 100.0
    assert when_text("2025-11-26T10:00:20+01:00") == "2025-11-26 10:00:20 +01:00"
    assert when_text("2025-11-26T10:00:20") == "2025-11-26 10:00:20"
    assert when_text("not a time") == "not a time"
    rows = {f"{r.group}.{r.key}": r for r in figure_rows(failing_case())}
    assert rows["migration.ram_transferred_mib"].text == "100 MiB"
    assert rows["measure.outage_window"].text == "4.998 – 5.046 s"
