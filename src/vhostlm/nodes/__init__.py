"""Where commands run: the local machine (in a lab namespace) or a server over SSH."""
