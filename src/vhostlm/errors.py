"""Exceptions that map to the tool's exit codes."""


class VhostlmError(Exception):
    """Base of every error vhostlm raises on purpose."""


class UsageError(VhostlmError):
    """Bad input or configuration: one line for the user, exit code 2."""


class SetupError(VhostlmError):
    """A component could not be started (binary missing, boot failed, ...)."""


class StepFailed(VhostlmError):
    """A check of a test step failed; the message is the verdict's reason."""
