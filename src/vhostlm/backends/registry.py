"""The backends by name, as `--backend`, a case spec and `vhostlm list` name them."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from vhostlm.backends.base import CLIENT, BackendConfig, VhostBackend
from vhostlm.backends.ovs import OvsBackend
from vhostlm.backends.testpmd import TestpmdBackend
from vhostlm.errors import UsageError
from vhostlm.testbed.topology import Tools

DEFAULT_BACKEND = "testpmd"  # the seed's
BACKENDS: dict[str, type[VhostBackend]] = {"testpmd": TestpmdBackend, "ovs-dpdk": OvsBackend}


def backend_class(name: str) -> type[VhostBackend]:
    """The backend class called `name`; KeyError names the known ones."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown vhost backend {name!r}: one of {', '.join(BACKENDS)}") from None


def make_backend(name: str, config: BackendConfig) -> VhostBackend:
    """The backend `name` for `config`; KeyError names the known ones."""
    return backend_class(name)(config)


def supported_by(wanted: Iterable[str]) -> list[str]:
    """The backends that can run a case needing `wanted` (`base.needs`), in registry order."""
    features = frozenset(wanted)
    return [name for name, cls in BACKENDS.items() if cls.unsupported(features) is None]


def runs_on(wanted: Iterable[str]) -> list[str]:
    """`supported_by`, plus `NAME:client` for a backend that runs the case only with
    --vhost-mode client (OVS-DPDK's postcopy): what `vhostlm list` shows."""
    features = frozenset(wanted)
    shown = []
    for name, cls in BACKENDS.items():
        if cls.unsupported(features) is None:
            shown.append(name)
        elif CLIENT not in features and cls.unsupported(features | {CLIENT}) is None:
            shown.append(f"{name}:client")
    return shown


def check_programs(name: str, nodes: dict[str, tuple[Callable[[str], str | None], Tools]]) -> None:
    """UsageError (one line, before anything starts) when a program of backend `name` is
    missing where it runs: `nodes` maps a node's label to (its `which`, its Tools)."""
    cls = backend_class(name)
    for label, (which, tools) in nodes.items():
        for binary in cls.programs(tools).values():
            if which(binary) is None:
                raise UsageError(
                    f"--backend {name}: {binary} not found on {label}: "
                    f"apt-get install {cls.package} (or run `make run`)"
                )
