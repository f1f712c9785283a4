"""The backends by name, as a case spec and `vhostlm list` name them."""

from __future__ import annotations

from collections.abc import Callable

from vhostlm.backends.base import BackendConfig, VhostBackend
from vhostlm.backends.ovs import OvsBackend  # issue 14: OVS-DPDK (not wired into the flow yet)
from vhostlm.backends.testpmd import TestpmdBackend

BACKENDS: dict[str, Callable[[BackendConfig], VhostBackend]] = {"testpmd": TestpmdBackend}
BACKENDS["ovs-dpdk"] = OvsBackend  # issue 14: added beside testpmd


def make_backend(name: str, config: BackendConfig) -> VhostBackend:
    """The backend `name` for `config`; KeyError names the known ones."""
    try:
        return BACKENDS[name](config)
    except KeyError:
        raise KeyError(f"unknown vhost backend {name!r}: one of {', '.join(BACKENDS)}") from None
