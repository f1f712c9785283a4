"""Running short commands (ip, mount, sysctl) with argument lists, never shell strings."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from vhostlm.errors import SetupError


def run(argv: Sequence[str], check: bool = True, timeout: float = 30.0) -> str:
    """Run `argv` and return its stdout; raise SetupError with its stderr when it fails."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise SetupError(f"{argv[0]} not found: install it (see README)") from exc
    except subprocess.TimeoutExpired as exc:
        raise SetupError(f"{' '.join(argv)} did not finish in {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        raise SetupError(f"{' '.join(argv)} failed: {err[-1] if err else proc.returncode}")
    return proc.stdout
