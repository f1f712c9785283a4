"""vhostlm.testbed package."""
