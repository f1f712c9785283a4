"""vhostlm.report: the results model (results.py), its figures and the report writers.

Code outside vhostlm should import from `vhostlm.api`, the stable surface.
"""
