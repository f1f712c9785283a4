"""The kinds of guest by name, as a case spec names them."""

from __future__ import annotations

from collections.abc import Callable

from vhostlm.guests.base import Guest
from vhostlm.guests.initramfs import InitramfsGuest

GUESTS: dict[str, Callable[[], Guest]] = {"initramfs": InitramfsGuest}


def make_guest(kind: str) -> Guest:
    """The guest of `kind`; KeyError names the known ones."""
    try:
        return GUESTS[kind]()
    except KeyError:
        raise KeyError(f"unknown guest kind {kind!r}: one of {', '.join(GUESTS)}") from None
