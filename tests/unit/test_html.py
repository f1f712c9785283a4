"""Tests of the HTML report: structure, embedded data, escaping, files; plus shared builders."""

from __future__ import annotations

import json
import random
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from vhostlm.report.html import (
    NO_TIMELINE,
    REPORT_NAME,
    embed_json,
    render_html,
    render_report_files,
    timeline_data,
    write_html,
)
from vhostlm.report.results import (
    CaseResult,
    MigrationFigures,
    RunResult,
    StepResult,
    TrafficFigures,
)

T0 = 1764151220.0
STOP_MS = 14400.0
GAP_MS = (14398.0, 14446.0)  # no reply arrives in this window
HOSTILE = "</script><script>alert(1)</script>"


# --- builders (also used by test_junit.py and the browser test) ---------------------------


def synthetic_replies(
    pps: int, seconds: float, gap: tuple[float, float], seed: int = 1
) -> list[float]:
    """Reply arrival times (ms after t0) of a steady stream with jitter and one gap."""
    rng = random.Random(seed)
    period = 1000.0 / pps
    times = (i * period + 0.4 + rng.random() * 0.3 for i in range(int(seconds * pps)))
    return [round(t, 3) for t in times if not gap[0] <= t < gap[1]]


def probe_measure(
    pps: int = 1000, seconds: float = 10.0, stop_ms: float = 5000.0
) -> dict[str, Any]:
    """A `measure` object as the lead's contract describes, around a switch-over at stop_ms."""
    gap = (stop_ms - 2.0, stop_ms + 46.0)
    replies = synthetic_replies(pps, seconds, gap)
    sent = int(seconds * pps)
    return {
        "pps": float(pps),
        "resolution_ms": 1000.0 / pps,
        "sent": sent,
        "replies": len(replies),
        "lost": sent - len(replies),
        "duplicates": 0,
        "reordered": 0,
        "outage_ms": 48.0,
        "outage_start": T0 + gap[0] / 1000,
        "outage_end": T0 + gap[1] / 1000,
        "stop_to_resume_ms": 30.0,
        "announce": {
            "seen": True,
            "kind": "rarp",
            "at": T0 + (stop_ms + 33) / 1000,
            "after_resume_ms": 3.0,
        },
        "qemu": {"total_time_ms": 5500, "downtime_ms": 30, "expected_downtime_ms": 300},
        "timeline": {
            "t0": T0,
            "reply_ms": replies,
            "marks_ms": {
                "migrate": stop_ms - 5400,
                "setup": stop_ms - 5399,
                "active": stop_ms - 5390,
                "stop": stop_ms,
                "resume": stop_ms + 30,
                "completed": stop_ms + 100,
                "announce": stop_ms + 33,
            },
        },
    }


def passing_case(name: str = "virtio_pmd", pps: int = 1000, seconds: float = 30.0) -> CaseResult:
    """A passing case with a probe timeline of pps * seconds probes and a 48 ms outage."""
    case = CaseResult(
        name=name,
        duration_s=42.9,
        steps=[
            StepResult("host_testpmd", "pass", "", 1.2),
            StepResult("migration_completed", "pass", "Migration status: completed", 5.5),
            StepResult("receives_after_migration", "pass", "received 10 more packets", 2.0),
        ],
        migration=MigrationFigures("completed", 5500, 30, 5, 480000000, 300, 640.2, 3),
        traffic=TrafficFigures(317, 1, 285, 10),
    )
    case.measure = probe_measure(
        pps, seconds, STOP_MS if seconds * 1000 > STOP_MS + 500 else 5000.0
    )
    case.finish()
    return case


def failing_case(name: str = "virtio_net") -> CaseResult:
    """A failing case with a hostile reason and a short timeline."""
    case = CaseResult(
        name=name,
        duration_s=20.5,
        steps=[
            StepResult("host_vm", "pass", "", 3.0),
            StepResult(
                "receives_after_migration", "fail", "counter stayed at 0\nafter migration", 4.0
            ),
        ],
        migration=MigrationFigures("completed", 3900, 38, 2, 100 * 1024 * 1024),
        traffic=TrafficFigures(4000, 700, 1500, 0),
        reason=f"receives_after_migration: {HOSTILE}",
    )
    case.measure = probe_measure(1000, 10.0)
    case.finish()
    return case


def erroring_case() -> CaseResult:
    """An erroring case whose measure has every key null (the report must cope)."""
    case = CaseResult(
        name="virtio_err",
        duration_s=3.0,
        steps=[
            StepResult("host_testpmd", "error", "testpmd exited with status 1", 3.0),
            StepResult("host_vm", "skip", "", 0.0),
        ],
    )
    keys = ("pps", "resolution_ms", "sent", "replies", "lost", "outage_ms", "outage_start")
    case.measure = {k: None for k in keys} | {"announce": None, "qemu": None, "timeline": None}
    case.finish()
    return case


def skipped_case() -> CaseResult:
    """A skipped case that ran without probes (empty measure)."""
    case = CaseResult(name="virtio_skip", steps=[StepResult("host_testpmd", "skip", "", 0.0)])
    case.finish()
    return case


def synthetic_run(cases: list[CaseResult] | None = None) -> RunResult:
    """A run with the four kinds of case unless `cases` is given."""
    return RunResult(
        started="2025-11-26T10:00:20+01:00",
        duration_s=63.3,
        accel="kvm",
        testbed="lab",
        cases=cases
        if cases is not None
        else [passing_case(), failing_case(), erroring_case(), skipped_case()],
        versions={"qemu": "7.2.19", "dpdk": "22.11.8"},
        run_id="abc123",
        command=["vhostlm", "run", "--pps", "1000"],
    )


# --- a small DOM summary from html.parser ------------------------------------------------


class Page(HTMLParser):
    """Collects what the tests look at: canvases, scripts, text, classes, external refs."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.scripts: list[tuple[dict[str, str], str]] = []
        self.text: list[str] = []
        self._script: dict[str, str] | None = None
        self._buf: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag == "script":
            self._script, self._buf = a, []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script, "".join(self._buf)))
            self._script = None

    def handle_data(self, data: str) -> None:
        (self._buf if self._script is not None else self.text).append(data)

    def all(self, tag: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag]

    def with_class(self, cls: str) -> list[dict[str, str]]:
        return [a for _, a in self.tags if cls in a.get("class", "").split()]

    @property
    def data(self) -> dict[str, Any]:
        (body,) = [b for a, b in self.scripts if a.get("type") == "application/json"]
        loaded: dict[str, Any] = json.loads(body)
        return loaded

    @property
    def plain(self) -> str:
        return " ".join(" ".join(self.text).split())


@pytest.fixture(scope="module")
def run() -> RunResult:
    return synthetic_run()


@pytest.fixture(scope="module")
def page(run: RunResult) -> Page:
    return Page(render_html(run))


# --- tests -------------------------------------------------------------------------------


def test_one_canvas_per_case_with_a_timeline(page: Page) -> None:
    canvases = page.all("canvas")
    assert [c["data-case"] for c in canvases] == ["0", "1"]
    assert all("timeline" in c["class"].split() for c in canvases)


def test_case_without_timeline_says_so(page: Page) -> None:
    notes = page.with_class("noplot")
    assert len(notes) == 2  # erroring (timeline null) and skipped (no measure)
    assert page.plain.count(NO_TIMELINE) == 2


def test_embedded_json_round_trips_with_reply_counts(run: RunResult, page: Page) -> None:
    data = page.data
    assert [c["name"] for c in data["cases"]] == [c.name for c in run.cases]
    first = data["cases"][0]
    expected = len(run.cases[0].measure["timeline"]["reply_ms"])
    assert expected > 25000
    assert first["replies"] == expected == len(first["timeline"]["reply_ms"])
    assert first["timeline"]["outage"] == pytest.approx([14398.0, 14446.0], abs=0.01)
    assert first["timeline"]["marks_ms"]["resume"] == 14430.0
    assert data["cases"][2]["timeline"] is None and data["cases"][3]["replies"] == 0


def test_hostile_reason_is_escaped_everywhere(run: RunResult) -> None:
    text = render_html(run)
    assert HOSTILE not in text
    assert "alert(1)</script>" not in text
    page = Page(text)
    assert len(page.scripts) == 3  # error recorder, data, plot: nothing injected
    assert HOSTILE in page.plain  # shown as text
    assert page.data["cases"][1]["reason"].endswith(HOSTILE)  # and intact in the data


def test_case_headings_verdicts_and_reason(page: Page) -> None:
    sections = page.with_class("case")
    assert [s["id"] for s in sections] == ["case-0", "case-1", "case-2", "case-3"]
    for verdict, n in (("v-pass", 1), ("v-fail", 1), ("v-error", 1), ("v-skip", 1)):
        badges = [a for a in page.with_class(verdict) if "badge" in a["class"].split()]
        assert len(badges) >= n
    assert len(page.with_class("r-fail")) == 1 and len(page.with_class("r-error")) == 1
    assert "testpmd exited with status 1" in page.plain


def test_steps_and_figures_tables(page: Page) -> None:
    assert len(page.with_class("steps")) == 4
    plain = page.plain
    for text in (
        "receives_after_migration",
        "outage (largest reply gap) 48 ms",
        "lost 48",
        "outage ÷ QEMU downtime 1.6 ×",
        "announce kind rarp",
        "outage window 14.398 – 14.446 s",
        "downtime (QEMU) 30 ms",
        "received during migration 285",
    ):
        assert text in plain, text


def test_header_names_run_environment(page: Page) -> None:
    plain = page.plain
    for text in ("started 2025-11-26 10:00:20 +01:00", "accel KVM", "qemu 7.2.19", "dpdk 22.11.8"):
        assert text in plain, text
    assert "vhostlm run --pps 1000" in plain


def test_page_is_self_contained(page: Page) -> None:
    for tag in ("link", "img", "iframe", "object", "embed"):
        assert page.all(tag) == [], tag
    assert all("src" not in attrs for attrs, _ in page.scripts)
    for _, attrs in page.tags:
        for value in attrs.values():
            assert "http://" not in value and "https://" not in value and not value.startswith("//")


def test_null_and_junk_measure_values_render(run: RunResult) -> None:
    case = passing_case(seconds=10.0)
    case.measure["outage_ms"] = float("nan")
    case.measure["lost"] = "many"
    case.measure["announce"] = {"seen": None, "kind": 3}
    case.measure["timeline"]["reply_ms"] = [None, 2.0, "x", 1.0, float("inf")]
    case.measure["timeline"]["marks_ms"] = {"stop": None, "resume": "soon"}
    page = Page(render_html(synthetic_run([case])))
    timeline = page.data["cases"][0]["timeline"]
    assert timeline["reply_ms"] == [1.0, 2.0]  # junk dropped, sorted
    assert timeline["outage_ms"] is None and "stop" not in timeline["marks_ms"]
    assert "outage (largest reply gap) —" in page.plain


def test_timeline_data_derives_announce_mark_and_span() -> None:
    case = passing_case(seconds=10.0)
    del case.measure["timeline"]["marks_ms"]["announce"]
    data = timeline_data(case)
    assert data is not None
    assert data["marks_ms"]["announce"] == pytest.approx(5033.0, abs=0.01)
    assert data["span_ms"] == pytest.approx(10000.0)
    case.measure["timeline"]["reply_ms"] = "not a list"
    assert timeline_data(case) is None


def test_embed_json_cannot_close_the_script() -> None:
    value = {"x": HOSTILE + " & <!-- \u2028"}
    text = embed_json(value)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == value


def test_write_html_and_report_files(tmp_path: Path, run: RunResult) -> None:
    path = render_report_files(run, tmp_path / "run")
    assert path == tmp_path / "run" / REPORT_NAME
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert len(Page(text).all("canvas")) == 2
    write_html(run, path)
    assert sorted(p.name for p in path.parent.iterdir()) == [REPORT_NAME]  # no temp file left


def test_every_text_is_escaped_by_the_templates() -> None:
    case = failing_case(HOSTILE)
    case.steps[0].name = HOSTILE
    case.steps[1].detail = f"{HOSTILE} & <b>bold</b>"
    run = synthetic_run([case])
    run.command = ["vhostlm", "run", HOSTILE]
    run.versions = {"qemu": HOSTILE}
    run.host = {"hostname": '"><img src=x onerror=alert(1)>'}
    text = render_html(run)
    assert HOSTILE not in text and "<b>bold</b>" not in text and "<img" not in text
    page = Page(text)
    assert len(page.scripts) == 3 and page.all("img") == [] and page.all("b") == []
    assert page.plain.count(HOSTILE) >= 6  # heading, table, reason, step, command, version
    (canvas,) = page.all("canvas")
    assert canvas["aria-label"] == f"{HOSTILE}: replies per millisecond"


def test_css_and_js_are_inlined_from_the_package_files() -> None:
    from importlib import resources

    static = resources.files("vhostlm.report").joinpath("static")
    text = render_html(synthetic_run([skipped_case()]))
    for name in ("errors.js", "report.css", "report.js"):
        body = static.joinpath(name).read_text(encoding="utf-8")
        assert len(body.splitlines()) > 15, name
        assert body in text, name  # verbatim: not escaped
    page = Page(text)
    assert (
        [body for attrs, body in page.scripts if "type" not in attrs][1].strip().endswith("})();")
    )
    assert "canvas.timeline" in text and "data-report-ready" in text
    templates = resources.files("vhostlm.report").joinpath("templates")
    assert templates.joinpath("report.html.j2").is_file()


def test_empty_run_renders_a_page() -> None:
    page = Page(render_html(synthetic_run([])))
    assert "no cases ran" in page.plain
    assert page.with_class("case") == [] and page.data["cases"] == []
    assert "1 pass" not in page.plain and "0 pass" in page.plain


def test_report_of_a_stream_measured_by_analyse() -> None:
    """The figures and the plot's outage come from the analysis of a stream, not by hand:
    probes every ms for 8 s from T0, the path down 5.000-5.048 s (STOP at 5.0 s)."""
    from vhostlm.plans.traffic import probe_figures

    send = [T0 + i / 1000 for i in range(8000)]
    replies = [[i, t + 0.0003] for i, t in enumerate(send) if not 5000 <= i < 5048]
    marks = {"migrate": T0 + 1.0, "stop": T0 + 5.0, "resume": T0 + 5.03, "completed": T0 + 5.1}
    data = {"pps": 1000.0, "t0": T0, "sent": 8000, "send_ts": send, "replies": replies}
    measure, legs = probe_figures(data, [marks], 1000.0)
    case = passing_case()
    case.measure = {"pps": 1000.0, "resolution_ms": 1.0, **measure, "legs": legs}
    case.finish()
    page = Page(render_html(synthetic_run([case])))
    # reply 4999 at 4.9993 s .. reply 5048 at 5.0483 s: 49 ms, 48 lost, none outside
    assert measure["outage_ms"] == pytest.approx(49.0, abs=0.001)
    for text in ("outage (largest reply gap) 49 ms", "lost 48", "outage window 4.999 – 5.048 s"):
        assert text in page.plain, text
    shown = page.data["cases"][0]
    assert shown["timeline"]["outage_ms"] == measure["outage_ms"]
    assert shown["timeline"]["outage"] == pytest.approx([4999.3, 5048.3], abs=0.01)
    assert shown["replies"] == 7952 == len(shown["timeline"]["reply_ms"])
