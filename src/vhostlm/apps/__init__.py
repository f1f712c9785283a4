"""vhostlm.apps package."""
