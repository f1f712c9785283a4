"""The guests vhostlm boots, and what each promises the host side."""
