"""vhostlm.image package."""
