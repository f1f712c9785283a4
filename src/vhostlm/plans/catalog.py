"""Every plan and case by name, and the selection of cases for a run."""

from __future__ import annotations

import re

from vhostlm.errors import UsageError
from vhostlm.plans.dts import DTS_CASES
from vhostlm.plans.reconnect import RECONNECT_CASES
from vhostlm.plans.seed import SEED_CASES
from vhostlm.plans.spec import CaseSpec
from vhostlm.plans.variants import DETECT_CASES, VARIANT_CASES

PLANS: dict[str, list[CaseSpec]] = {
    "seed": SEED_CASES,
    "dts": DTS_CASES,
    "variants": VARIANT_CASES,
    "detect": DETECT_CASES,  # loads that expose lost guest state (bench/detect_bench.py)
    "reconnect": RECONNECT_CASES,  # a backend restarted mid-case must reconnect (both modes)
    "all": [*SEED_CASES, *DTS_CASES, *VARIANT_CASES, *DETECT_CASES, *RECONNECT_CASES],
}


def all_cases() -> dict[str, CaseSpec]:
    """Every known case by name."""
    return {case.name: case for case in PLANS["all"]}


def plan_of(case: CaseSpec) -> str:
    """The first plan that lists `case`."""
    return next(plan for plan, cases in PLANS.items() if case in cases)


def matches(expr: str, name: str) -> bool:
    """pytest-style -k: words are substrings of the name, joined by and/or/not and parens."""
    tokens = re.findall(r"\(|\)|[^\s()]+", expr)
    if not tokens:
        raise UsageError("-k: empty expression")
    words = []
    for tok in tokens:
        if tok in ("and", "or", "not", "(", ")"):
            words.append(tok)
        else:
            words.append(str(tok in name))
    try:
        return bool(eval(" ".join(words), {"__builtins__": {}}, {}))  # noqa: S307 - only True/False/and/or/not
    except SyntaxError as exc:
        raise UsageError(f"-k: cannot read {expr!r}: use words, and, or, not, ( )") from exc


def select_cases(plan: str, names: list[str], keyword: str | None) -> list[CaseSpec]:
    """The cases to run: --case names (any plan) or the plan's, then filtered by -k."""
    known = all_cases()
    for name in names:
        if name not in known:
            raise UsageError(f"--case: unknown case {name!r}: see `vhostlm list`")
    cases = [known[n] for n in names] if names else list(PLANS[plan])
    if keyword is not None:
        cases = [c for c in cases if matches(keyword, c.name)]
        if not cases:
            raise UsageError(f"-k {keyword!r} selects no case: see `vhostlm list`")
    return cases
