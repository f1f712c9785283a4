"""vhostlm.plans package."""
