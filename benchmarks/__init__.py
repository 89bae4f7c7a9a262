"""Side-by-side benchmarks: djdask against DataJoint's own populate, in one run.

``python -m benchmarks [--quick] [--backend postgres|mariadb]`` starts its own
database servers (as the tests do), runs each case for djdask and for its
DataJoint baseline, and writes ``benchmarks/results/<date>.json`` and a
markdown table.
"""
