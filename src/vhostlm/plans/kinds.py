"""Kinds of migration as small strategies: what QEMU is told and how a leg must end.

A kind names its own ending steps, once; the flow runs them in order through the
operations of a leg (`LegOps`, implemented by `plans.leg.LegRun`). Complete must complete
and the guest must receive on the destination; postcopy and multifd are complete
migrations with more set up; cancel and no-converge must not complete, and the source
must keep running.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from vhostlm.plans.steps import StepDef
from vhostlm.report.results import StepResult


class LegOps(Protocol):
    """What one leg can do; each returns nothing and raises StepFailed when its check fails."""

    def completed(self, step: StepResult) -> None:
        """Wait for `completed` (and the destination's RESUME); keep QEMU's figures."""

    def receives_after(self, step: StepResult) -> None:
        """The guest receives on the destination."""

    def postcopy_started(self, step: StepResult) -> None:
        """migrate-start-postcopy and wait for postcopy-active."""

    def cancelled(self, step: StepResult) -> None:
        """migrate_cancel and wait for cancelled."""

    def not_converged(self, step: StepResult) -> None:
        """Still not ended after --converge-timeout: then cancelled."""

    def source_receives(self, step: StepResult) -> None:
        """The source guest still runs and receives."""


def _step(name: str, seed: str, run: Any) -> StepDef[LegOps]:
    return StepDef(name, run, seed)


MIGRATION_COMPLETED = _step("migration_completed", "step 12", lambda o, s: o.completed(s))
RECEIVES_AFTER = _step("receives_after_migration", "step 13", lambda o, s: o.receives_after(s))
POSTCOPY_ACTIVE = _step("postcopy_active", "", lambda o, s: o.postcopy_started(s))
MIGRATION_CANCELLED = _step("migration_cancelled", "", lambda o, s: o.cancelled(s))
DID_NOT_CONVERGE = _step("did_not_converge", "", lambda o, s: o.not_converged(s))
SOURCE_KEEPS_RECEIVING = _step("source_keeps_receiving", "", lambda o, s: o.source_receives(s))


@dataclass(frozen=True)
class MigrationKind:
    """A migration that completes: the guest moves and receives on the destination."""

    name: str = "complete"
    capabilities: Mapping[str, bool] = field(default_factory=lambda: MappingProxyType({}))
    parameters: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    defer_incoming: bool = False  # the destination listens only once capabilities are set
    postcopy: bool = False  # the backend must support postcopy (vhost postcopy-support=1)
    moves_guest: bool = True  # False: the guest stays on the source when the leg ends

    def end_steps(self) -> tuple[StepDef[LegOps], ...]:
        """The steps after `receives_during_migration`, in order."""
        return (MIGRATION_COMPLETED, RECEIVES_AFTER)


@dataclass(frozen=True)
class Postcopy(MigrationKind):
    """Precopy first, then `migrate-start-postcopy`; must complete."""

    name: str = "postcopy"
    capabilities: Mapping[str, bool] = field(
        default_factory=lambda: MappingProxyType({"postcopy-ram": True})
    )
    postcopy: bool = True

    def end_steps(self) -> tuple[StepDef[LegOps], ...]:
        """postcopy_active, then as a complete migration."""
        return (POSTCOPY_ACTIVE, *super().end_steps())


@dataclass(frozen=True)
class Multifd(MigrationKind):
    """RAM over several channels; the destination starts with `-incoming defer`."""

    name: str = "multifd"
    capabilities: Mapping[str, bool] = field(
        default_factory=lambda: MappingProxyType({"multifd": True})
    )
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({"multifd-channels": 2})
    )
    defer_incoming: bool = True


@dataclass(frozen=True)
class Cancel(MigrationKind):
    """Cancelled mid-way on purpose: the guest stays on the source and keeps answering."""

    name: str = "cancel"
    moves_guest: bool = False

    def end_steps(self) -> tuple[StepDef[LegOps], ...]:
        """Cancel, then the source must keep receiving."""
        return (MIGRATION_CANCELLED, SOURCE_KEEPS_RECEIVING)


@dataclass(frozen=True)
class NoConverge(MigrationKind):
    """Must not converge within --converge-timeout; then cancelled, the source goes on."""

    name: str = "no_converge"
    moves_guest: bool = False

    def end_steps(self) -> tuple[StepDef[LegOps], ...]:
        """Not ended in time (then cancelled), then the source must keep receiving."""
        return (DID_NOT_CONVERGE, SOURCE_KEEPS_RECEIVING)


COMPLETE = MigrationKind()
