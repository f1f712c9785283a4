"""Running a case as named steps, each with its own verdict, timing and figures."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from vhostlm.errors import SetupError, StepFailed
from vhostlm.report.progress import Progress
from vhostlm.report.results import CaseResult, StepResult


def leg_suffix(leg: int) -> str:
    """'' for a case's first migration, `_leg2` and so on after it."""
    return f"_leg{leg + 1}" if leg else ""


class CaseAborted(Exception):
    """A step did not pass: the remaining steps of the case are skipped."""


class CaseSkipped(Exception):
    """The case cannot run here (a feature this QEMU or DPDK lacks): verdict skip."""


class StepRunner:
    """Records each step of one case into its CaseResult and reports progress."""

    def __init__(self, result: CaseResult, progress: Progress, planned: list[str]) -> None:
        self.result = result
        self.progress = progress
        self.planned = planned
        self._done: set[str] = set()
        # Gives a failed step's detail its cause, and True when that cause is a fault of
        # the test bed (a dead process, no traffic): then the step fails, never errors.
        self.explain: Callable[[str], tuple[str, bool]] | None = None

    def _explained(self, detail: str) -> tuple[str, bool]:
        return self.explain(detail) if self.explain is not None else (detail, False)

    @contextmanager
    def step(self, name: str, seed: str = "") -> Iterator[StepResult]:
        """Run the body as step `name`; StepFailed -> fail, other errors -> error, then abort.

        `seed` names the step of the seed plan this one implements (e.g. "step 9").
        """
        self.progress.phase(self.result.name, name)
        step = StepResult(name=name, verdict="pass")
        if seed:
            step.figures["seed_step"] = seed
        self.result.steps.append(step)
        self._done.add(name)
        start = time.monotonic()
        try:
            yield step
        except CaseSkipped as exc:
            step.verdict, step.detail = "skip", str(exc)
            raise
        except StepFailed as exc:
            step.verdict, step.detail = "fail", self._explained(str(exc))[0]
            raise CaseAborted(step.detail) from exc
        except SetupError as exc:
            step.detail, fault = self._explained(str(exc))
            step.verdict = "fail" if fault else "error"
            raise CaseAborted(step.detail) from exc
        finally:
            step.duration_s = round(time.monotonic() - start, 3)

    def skip_rest(self, why: str) -> None:
        """Mark every planned step that did not run as skipped, with `why`."""
        for name in self.planned:
            if name not in self._done:
                self.result.steps.append(StepResult(name=name, verdict="skip", detail=why))
                self._done.add(name)


Ctx = TypeVar("Ctx")


def always(_spec: Any, _options: Any) -> bool:
    """A step every case runs."""
    return True


@dataclass(frozen=True)
class StepDef(Generic[Ctx]):
    """A step, named once: its name, the seed step it implements, what it runs on a
    context (`run(ctx, step)`) and, from the case's spec and options, whether it applies."""

    name: str
    run: Callable[[Ctx, StepResult], None]
    seed: str = ""
    when: Callable[[Any, Any], bool] = always
    name_of: Callable[[Any], str] | None = None  # the name from the case's spec, if it varies

    def named(self, spec: Any) -> str:
        """The step's name in a case with `spec`."""
        return self.name_of(spec) if self.name_of is not None else self.name
