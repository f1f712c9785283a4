"""A failed step gets its cause from the case's explain hook; a test-bed fault fails it."""

from __future__ import annotations

import io

import pytest

from vhostlm.errors import SetupError, StepFailed
from vhostlm.plans.steps import CaseAborted, StepRunner
from vhostlm.report.progress import Progress
from vhostlm.report.results import CaseResult


def runner() -> StepRunner:
    return StepRunner(CaseResult(name="c"), Progress(io.StringIO(), tty=False), ["a", "b"])


def test_without_a_fault_an_error_stays_an_error() -> None:
    r = runner()
    r.explain = lambda detail: (detail, False)
    with pytest.raises(CaseAborted, match="QMP quit"), r.step("a"):
        raise SetupError("QMP quit")
    assert (r.result.steps[0].verdict, r.result.steps[0].detail) == ("error", "QMP quit")


def test_a_fault_turns_an_error_into_a_failure_naming_it() -> None:
    r = runner()
    r.explain = lambda detail: (f"{detail}; the backup QEMU (pid 7) was killed by SIGKILL", True)
    with pytest.raises(CaseAborted), r.step("a"):
        raise SetupError("QMP query-migrate: no answer")
    step = r.result.steps[0]
    assert step.verdict == "fail"
    assert step.detail.endswith("the backup QEMU (pid 7) was killed by SIGKILL")


def test_a_failed_check_keeps_its_verdict_with_the_cause() -> None:
    r = runner()
    r.explain = lambda detail: (f"no traffic: the tester stopped ({detail})", True)
    with pytest.raises(CaseAborted, match="^no traffic"), r.step("b"):
        raise StepFailed("the guest received 0 packets")
    assert r.result.steps[0].verdict == "fail"
