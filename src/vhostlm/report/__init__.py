"""vhostlm.report package."""
