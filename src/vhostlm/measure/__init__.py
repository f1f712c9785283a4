"""vhostlm.measure package."""
