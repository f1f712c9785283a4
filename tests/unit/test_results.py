"""Tests of the results model: verdicts, QMP figures, JSON round trip, validation, schema."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from vhostlm import api
from vhostlm.cli import main
from vhostlm.errors import UsageError
from vhostlm.report.results import (
    CaseResult,
    MigrationFigures,
    RunResult,
    StepResult,
    TrafficFigures,
    load_results,
    now_iso,
    packaged_schema,
    results_schema,
    schema_text,
    validate_results,
    write_results,
)

# A `query-migrate` reply as QEMU 7.2 returns it after a completed precopy migration.
QMP_COMPLETED: dict[str, Any] = {
    "status": "completed",
    "setup-time": 3,
    "downtime": 45,
    "total-time": 4210,
    "ram": {
        "transferred": 118489088,
        "remaining": 0,
        "total": 1091379200,
        "duplicate": 237634,
        "skipped": 0,
        "normal": 28701,
        "normal-bytes": 117559296,
        "dirty-sync-count": 3,
        "page-size": 4096,
        "multifd-bytes": 0,
        "pages-per-second": 32510,
        "precopy-bytes": 117186560,
        "downtime-bytes": 1302528,
        "postcopy-bytes": 0,
        "dirty-sync-missed-zero-copy": 0,
        "mbps": 230.5,
        "postcopy-requests": 0,
    },
}

# The same migration still running: no `downtime` yet, `expected-downtime` instead.
QMP_ACTIVE: dict[str, Any] = {
    "status": "active",
    "setup-time": 3,
    "total-time": 1187,
    "expected-downtime": 300,
    "ram": {
        "transferred": 40960000,
        "remaining": 990000000,
        "total": 1091379200,
        "dirty-sync-count": 1,
        "mbps": 268.4,
        "dirty-pages-rate": 0,
        "page-size": 4096,
    },
}


def make_run() -> RunResult:
    case = CaseResult(
        name="virtio_pmd",
        duration_s=31.4,
        steps=[
            StepResult("guest_testpmd_started", "pass", "port 0 up", 5.2, {"rx": 12}),
            StepResult("vhost_connected", "pass", "VHOST_CONFIG: new device", 0.1),
            StepResult("migration_completed", "pass", "status completed", 4.3, {"mbps": 230.5}),
        ],
        migration=MigrationFigures.from_query_migrate(QMP_COMPLETED),
        traffic=TrafficFigures(
            sent=5000, received_before=800, received_during=2100, received_after=900
        ),
        phases={"boot": 5.0, "migration": 4.2},
    )
    case.finish()
    return RunResult(
        started="2024-05-01T10:11:12+02:00",
        duration_s=41.2,
        accel="tcg",
        cases=[case, CaseResult(name="virtio_net", verdict="skip", reason="not selected")],
        versions={"qemu": "7.2.9", "dpdk": "22.11.4", "guest_kernel": "6.1.0-18-amd64"},
        host={"hostname": "ci-1"},
        command=["vhostlm", "run"],
        output_dir="/tmp/results/x",
    )


# --- MigrationFigures.from_query_migrate --------------------------------------------------


def test_from_query_migrate_completed() -> None:
    m = MigrationFigures.from_query_migrate(QMP_COMPLETED)
    assert m == MigrationFigures(
        status="completed",
        total_time_ms=4210,
        downtime_ms=45,
        setup_time_ms=3,
        ram_transferred_bytes=118489088,
        expected_downtime_ms=0,
        mbps=230.5,
        dirty_sync_count=3,
    )


def test_from_query_migrate_counts_postcopy_page_requests() -> None:
    """A postcopy migration's destination faults: QEMU counts them in ram.postcopy-requests."""
    reply = {**QMP_COMPLETED, "ram": {**QMP_COMPLETED["ram"], "postcopy-requests": 57,
                                      "postcopy-bytes": 233472}}  # fmt: skip
    assert MigrationFigures.from_query_migrate(reply).postcopy_requests == 57
    assert MigrationFigures.from_query_migrate(QMP_COMPLETED).postcopy_requests == 0


def test_from_query_migrate_active_has_no_downtime() -> None:
    m = MigrationFigures.from_query_migrate(QMP_ACTIVE)
    assert m.status == "active"
    assert m.downtime_ms == 0
    assert m.expected_downtime_ms == 300
    assert m.total_time_ms == 1187
    assert m.ram_transferred_bytes == 40960000
    assert m.dirty_sync_count == 1


def test_from_query_migrate_unwraps_return_and_tolerates_empty() -> None:
    assert MigrationFigures.from_query_migrate({"return": QMP_COMPLETED}).downtime_ms == 45
    assert MigrationFigures.from_query_migrate({}) == MigrationFigures()
    assert MigrationFigures.from_query_migrate({"status": "setup", "ram": None}).status == "setup"


# --- CaseResult.finish --------------------------------------------------------------------


def case_with(*verdicts: str) -> CaseResult:
    steps = [StepResult(f"s{i}", v, f"detail {i}") for i, v in enumerate(verdicts)]  # type: ignore[arg-type]
    return CaseResult(name="c", steps=steps)


def test_finish_all_pass() -> None:
    case = case_with("pass", "pass", "skip")
    case.finish()
    assert (case.verdict, case.reason) == ("pass", "")


def test_finish_fail_names_first_failing_step() -> None:
    case = case_with("pass", "fail", "fail")
    case.finish()
    assert case.verdict == "fail"
    assert case.reason == "s1: detail 1"


def test_finish_error_beats_fail() -> None:
    case = case_with("fail", "pass", "error")
    case.finish()
    assert case.verdict == "error"
    assert case.reason == "s2: detail 2"


def test_finish_all_skipped() -> None:
    case = case_with("skip", "skip")
    case.finish()
    assert case.verdict == "skip"


def test_finish_no_steps_is_not_a_pass() -> None:
    case = CaseResult(name="c")
    case.finish()
    assert case.verdict == "skip"
    assert case.reason == "no steps ran"


def test_finish_keeps_explicit_verdict_and_reason() -> None:
    case = case_with("pass")
    case.verdict, case.reason = "error", "QEMU did not boot"
    case.finish()
    assert (case.verdict, case.reason) == ("error", "QEMU did not boot")
    failing = case_with("fail")
    failing.reason = "custom reason"
    failing.finish()
    assert (failing.verdict, failing.reason) == ("fail", "custom reason")


# --- exit_code ----------------------------------------------------------------------------


def test_exit_code_zero_for_pass_and_skip() -> None:
    assert make_run().exit_code == 0


@pytest.mark.parametrize("verdict", ["fail", "error"])
def test_exit_code_one_for_fail_or_error(verdict: str) -> None:
    run = make_run()
    run.cases[1].verdict = verdict  # type: ignore[assignment]
    assert run.exit_code == 1


def test_exit_code_one_for_failed_step_even_without_finish() -> None:
    run = make_run()
    run.cases.append(case_with("pass", "fail"))  # finish() not called: verdict still "pass"
    assert run.exit_code == 1


# --- write / load -------------------------------------------------------------------------

# results.json of make_run() plus a measure and options, written out by hand: the form the
# dataclass model wrote before the pydantic one, key order and int/float shapes included.
# what a case that ran no integrity check records
NO_INTEGRITY: dict[str, Any] = {
    "checks": [],
    "payload_checked": 0,
    "payload_corrupt": 0,
    "payload_foreign": 0,
    "payload_truncated": 0,
    "payload_samples": [],
    "memcheck_mb": 0,
    "memcheck_dirty_mb_s": 0.0,
    "memcheck_scans": 0,
    "pages_checked": 0,
    "pages_bad": 0,
    "bad_pages": [],
    "anomalies": [],
    "ram_pages_differ": 0,
    "ram": [],
    "failure": "",
}

EXPECTED_RESULTS: dict[str, Any] = {
    "started": "2024-05-01T10:11:12+02:00",
    "duration_s": 41.2,
    "accel": "tcg",
    "testbed": "lab",
    "cases": [
        {
            "name": "virtio_pmd",
            "verdict": "pass",
            "reason": "",
            "duration_s": 31.4,
            "steps": [
                {
                    "name": "guest_testpmd_started",
                    "verdict": "pass",
                    "detail": "port 0 up",
                    "duration_s": 5.2,
                    "figures": {"rx": 12},
                },
                {
                    "name": "vhost_connected",
                    "verdict": "pass",
                    "detail": "VHOST_CONFIG: new device",
                    "duration_s": 0.1,
                    "figures": {},
                },
                {
                    "name": "migration_completed",
                    "verdict": "pass",
                    "detail": "status completed",
                    "duration_s": 4.3,
                    "figures": {"mbps": 230.5},
                },
            ],
            "migration": {
                "status": "completed",
                "total_time_ms": 4210,
                "downtime_ms": 45,
                "setup_time_ms": 3,
                "ram_transferred_bytes": 118489088,
                "expected_downtime_ms": 0,
                "mbps": 230.5,
                "dirty_sync_count": 3,
                "postcopy_requests": 0,
            },
            "traffic": {
                "sent": 5000,
                "received_before": 800,
                "received_during": 2100,
                "received_after": 900,
            },
            "phases": {"boot": 5.0, "migration": 4.2},
            "measure": {
                "pps": 1000.0,
                "sent": 3,
                "outage_ms": None,
                "announce": {"seen": False},
                "timeline": {"t0": 1764151220.5, "reply_ms": [0.4, 1.5], "marks_ms": {}},
            },
            "options": {"pps": 1000, "migration_tls": True, "cpu": None},
            "integrity": NO_INTEGRITY,
        },
        {
            "name": "virtio_net",
            "verdict": "skip",
            "reason": "not selected",
            "duration_s": 0.0,
            "steps": [],
            "migration": {
                "status": "",
                "total_time_ms": 0,
                "downtime_ms": 0,
                "setup_time_ms": 0,
                "ram_transferred_bytes": 0,
                "expected_downtime_ms": 0,
                "mbps": 0.0,
                "dirty_sync_count": 0,
                "postcopy_requests": 0,
            },
            "traffic": {
                "sent": 0,
                "received_before": 0,
                "received_during": 0,
                "received_after": 0,
            },
            "phases": {},
            "measure": {},
            "options": {},
            "integrity": NO_INTEGRITY,
        },
    ],
    "versions": {"qemu": "7.2.9", "dpdk": "22.11.4", "guest_kernel": "6.1.0-18-amd64"},
    "host": {"hostname": "ci-1"},
    "command": ["vhostlm", "run"],
    "output_dir": "/tmp/results/x",
    "run_id": "",
    "phases": {},
    "clocks": {},
}


def make_full_run() -> RunResult:
    """make_run() with a measure and options assigned the way the case flow does."""
    run = make_run()
    case = run.cases[0]
    case.measure = {
        "pps": 1000.0,
        "sent": 3,
        "outage_ms": None,
        "announce": {"seen": False},
        "timeline": {"t0": 1764151220.5, "reply_ms": [0.4, 1.5], "marks_ms": {}},
    }
    case.options = {"pps": 1000, "migration_tls": True, "cpu": None}
    return run


def test_written_json_is_exactly_the_known_form(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    write_results(make_full_run(), path)
    text = path.read_text(encoding="utf-8")
    # the text, not only the parsed value: key order, 5.0 vs 5, indent and newline count
    assert text == json.dumps(EXPECTED_RESULTS, indent=2) + "\n"
    assert json.loads(text) == EXPECTED_RESULTS


def test_rewriting_a_loaded_file_changes_nothing(tmp_path: Path) -> None:
    path, again = tmp_path / "results.json", tmp_path / "again.json"
    path.write_text(json.dumps(EXPECTED_RESULTS, indent=2) + "\n", encoding="utf-8")
    write_results(load_results(path), again)
    assert again.read_bytes() == path.read_bytes()


def test_round_trip(tmp_path: Path) -> None:
    run = make_run()
    path = tmp_path / "out" / "results.json"
    write_results(run, path)
    assert load_results(path) == run
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temp file left


def test_written_json_has_required_keys(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    write_results(make_run(), path)
    text = path.read_text()
    assert text.startswith('{\n  "started"')  # indent 2
    data = json.loads(text)
    assert validate_results(data) == []
    case = data["cases"][0]
    assert set(case) >= {"name", "verdict", "reason", "duration_s", "steps", "migration", "traffic"}
    assert set(case["steps"][0]) >= {"name", "verdict", "detail"}
    assert case["migration"]["downtime_ms"] == 45
    assert case["migration"]["ram_transferred_bytes"] == 118489088
    assert case["traffic"] == {
        "sent": 5000,
        "received_before": 800,
        "received_during": 2100,
        "received_after": 900,
    }


def test_write_replaces_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("old")
    write_results(make_run(), path)
    assert load_results(path).duration_s == 41.2


def test_now_iso_is_valid_started() -> None:
    run = RunResult(started=now_iso(), accel="kvm")
    assert validate_results(run.to_dict()) == []


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(UsageError, match="nope.json") as info:
        load_results(path)
    assert "\n" not in str(info.value)


def test_load_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text('{"started": ')
    with pytest.raises(UsageError, match=r"results\.json: not valid JSON: .* line 1") as info:
        load_results(path)
    assert "\n" not in str(info.value)


def test_load_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("[1, 2]")
    with pytest.raises(UsageError, match="expected a JSON object, got an array"):
        load_results(path)


def test_load_missing_key(tmp_path: Path) -> None:
    data = make_run().to_dict()
    del data["cases"][0]["traffic"]["sent"]
    del data["accel"]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UsageError) as info:
        load_results(path)
    assert str(info.value) == f"{path}: accel: missing"  # the first problem, one line


def test_load_names_the_wrong_field(tmp_path: Path) -> None:
    data = make_run().to_dict()
    data["cases"][0]["steps"][1]["verdict"] = "passed"
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UsageError) as info:
        load_results(str(path))  # a str path works too
    assert str(info.value) == (
        f"{path}: cases.0.steps.1.verdict: "
        "Input should be 'pass', 'fail', 'error' or 'skip' (got \"passed\")"
    )


def test_report_command_refuses_a_bad_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_run().to_dict()
    data["cases"][0]["migration"]["downtime_ms"] = "45"
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    assert main(["report", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"vhostlm: error: {path}: cases.0.migration.downtime_ms: "
        'Input should be a valid integer (got "45")\n'
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no report.html


def test_report_command_renders_a_good_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "results.json"
    write_results(make_run(), path)
    assert main(["report", str(path)]) == 0
    assert capsys.readouterr().out == f"report: {tmp_path / 'report.html'}\n"
    assert (tmp_path / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


# --- the model as the rest of the code uses it --------------------------------------------


def test_construction_is_validated() -> None:
    with pytest.raises(ValidationError, match="verdict"):
        StepResult(name="x", verdict="passed")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="started"):
        RunResult(started="yesterday")
    with pytest.raises(ValidationError, match="accel"):
        RunResult(started=now_iso(), accel="hvf")
    assert StepResult("s", "pass", figures={"n": 3, "x": 1.5, "t": "t"}).figures == {
        "n": 3,
        "x": 1.5,
        "t": "t",
    }
    assert type(StepResult("s", "pass", figures={"n": 3}).figures["n"]) is int


def test_mutation_style_of_the_case_flow() -> None:
    result = CaseResult(name="c")
    step = StepResult(name="boot", verdict="pass")
    result.steps.append(step)
    step.figures["boot_s"] = 1.25
    step.detail = "booted"
    result.options = {"pps": 100}
    result.phases["stop_s"] = 0.5
    result.traffic.sent = 7
    result.measure = {"outage_ms": 12.0}
    figs = MigrationFigures.from_query_migrate(QMP_COMPLETED)
    result.migration = figs
    figs.status = "cancelled"
    result.finish()
    assert result.migration.status == "cancelled" and result.traffic.sent == 7
    assert result.steps[0].figures == {"boot_s": 1.25}
    assert (result.verdict, result.ok) == ("pass", True)
    # plain dataclasses to the rest of the code (the traffic plan uses asdict on figures)
    assert dataclasses.asdict(figs)["downtime_ms"] == 45
    run = RunResult(started=now_iso(), cases=[result])
    assert run.to_dict()["cases"][0]["migration"]["status"] == "cancelled"


# --- the published schema ------------------------------------------------------------------


def test_packaged_schema_is_generated_from_the_model() -> None:
    # regenerate after a model change: python -m vhostlm.report.results > \
    #   src/vhostlm/report/results.schema.json
    assert json.loads(packaged_schema()) == results_schema()
    assert packaged_schema() == schema_text()


def test_schema_describes_what_is_written() -> None:
    schema = results_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == list(EXPECTED_RESULTS)
    defs = schema["$defs"]
    case = EXPECTED_RESULTS["cases"][0]
    for name, sample in (
        ("CaseResult", case),
        ("StepResult", case["steps"][0]),
        ("MigrationFigures", case["migration"]),
        ("TrafficFigures", case["traffic"]),
    ):
        assert defs[name]["required"] == list(sample), name
    verdict = defs["StepResult"]["properties"]["verdict"]
    assert verdict["enum"] == ["pass", "fail", "error", "skip"]
    assert schema["properties"]["started"]["format"] == "date-time"
    assert schema["properties"]["accel"]["enum"] == ["kvm", "tcg", ""]
    assert defs["MigrationFigures"]["properties"]["downtime_ms"]["type"] == "integer"


def test_api_exposes_the_model_and_loader(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    write_results(make_full_run(), path)
    run = api.load_results(path)
    assert isinstance(run, api.RunResult) and run.exit_code == 0
    assert run.cases[0].measure["timeline"]["reply_ms"] == [0.4, 1.5]
    rows = {f"{r.group}.{r.key}": r.text for r in api.figure_rows(run.cases[0])}
    assert rows["migration.downtime_ms"] == "45 ms"
    assert api.validate_results(json.loads(path.read_text())) == []
    assert set(api.__all__) <= set(dir(api))


# --- validate_results ---------------------------------------------------------------------


def valid() -> dict[str, Any]:
    return make_run().to_dict()


def test_validate_accepts_valid_and_extra_keys() -> None:
    data = valid()
    data["extra"] = {"anything": 1}
    data["cases"][0]["extra"] = []
    assert validate_results(data) == []


def test_validate_accepts_minimal_schema() -> None:
    data = {
        "started": "2024-05-01T08:00:00Z",
        "duration_s": 0,
        "accel": "kvm",
        "testbed": "lab",
        "cases": [
            {
                "name": "virtio_pmd",
                "verdict": "pass",
                "reason": "",
                "duration_s": 0.0,
                "steps": [{"name": "", "verdict": "pass", "detail": ""}],
                "migration": {
                    "status": "",
                    "total_time_ms": 0,
                    "downtime_ms": 0,
                    "setup_time_ms": 0,
                    "ram_transferred_bytes": 0,
                },
                "traffic": {
                    "sent": 0,
                    "received_before": 0,
                    "received_during": 0,
                    "received_after": 0,
                },
            }
        ],
    }
    assert validate_results(data) == []
    assert RunResult.from_dict(data).cases[0].migration.mbps == 0.0


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (["started"], "started: missing"),
        (["cases"], "cases: missing"),
        (["cases", 0, "verdict"], "cases.0.verdict: missing"),
        (["cases", 0, "steps", 1, "detail"], "cases.0.steps.1.detail: missing"),
        (["cases", 0, "migration", "downtime_ms"], "cases.0.migration.downtime_ms: missing"),
        (["cases", 0, "traffic", "received_after"], "cases.0.traffic.received_after: missing"),
    ],
)
def test_validate_missing_key(path: list[Any], expected: str) -> None:
    data = valid()
    parent: Any = data
    for part in path[:-1]:
        parent = parent[part]
    del parent[path[-1]]
    assert validate_results(data) == [expected]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (["duration_s"], "41", 'duration_s: Input should be a valid number (got "41")'),
        (["duration_s"], True, "duration_s: Input should be a valid number (got true)"),
        (["cases"], {}, "cases: Input should be a valid array (got an object)"),
        (["cases", 0, "reason"], None, "cases.0.reason: Input should be a valid string (got null)"),
        (
            ["cases", 0, "migration", "downtime_ms"],
            4.5,
            "cases.0.migration.downtime_ms: Input should be a valid integer (got 4.5)",
        ),
        (
            ["cases", 0, "traffic", "sent"],
            "5000",
            'cases.0.traffic.sent: Input should be a valid integer (got "5000")',
        ),
        (
            ["cases", 0, "steps", 0],
            "step",
            'cases.0.steps.0: Input should be an object (got "step")',
        ),
        (["versions"], {"qemu": 7}, "versions.qemu: Input should be a valid string (got 7)"),
        (
            ["cases", 0, "phases"],
            {"boot": "fast"},
            'cases.0.phases.boot: Input should be a valid number (got "fast")',
        ),
        (
            ["cases", 0, "steps", 0, "figures"],
            {"rx": True},
            "cases.0.steps.0.figures.rx: Input should be a number or a string (got true)",
        ),
        (
            ["cases", 0, "measure"],
            [],
            "cases.0.measure: Input should be an object (got an array)",
        ),
    ],
)
def test_validate_wrong_type(path: list[Any], value: Any, expected: str) -> None:
    data = valid()
    parent: Any = data
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    assert validate_results(data) == [expected]


def test_validate_bad_verdicts() -> None:
    data = valid()
    data["cases"][0]["verdict"] = "passed"
    data["cases"][0]["steps"][2]["verdict"] = "ok"
    assert validate_results(data) == [
        "cases.0.verdict: Input should be 'pass', 'fail', 'error' or 'skip' (got \"passed\")",
        "cases.0.steps.2.verdict: Input should be 'pass', 'fail', 'error' or 'skip' (got \"ok\")",
    ]


@pytest.mark.parametrize("started", ["yesterday", "2024-05-01T10:11:12"])
def test_validate_started_needs_iso_with_timezone(started: str) -> None:
    data = valid()
    data["started"] = started
    assert validate_results(data) == [
        f'started: Input should be ISO 8601 with a UTC offset (got "{started}")'
    ]


def test_validate_accel() -> None:
    data = valid()
    data["accel"] = "hvf"
    assert validate_results(data) == [
        "accel: Input should be 'kvm', 'tcg' or '' for not probed (got \"hvf\")"
    ]


def test_validate_not_an_object() -> None:
    assert validate_results([]) == ["expected a JSON object, got an array"]


def test_from_dict_raises_value_error() -> None:
    data = valid()
    data["cases"][0]["steps"][0]["verdict"] = "maybe"
    with pytest.raises(ValueError, match=r"^cases\.0\.steps\.0\.verdict: Input should be"):
        RunResult.from_dict(data)
