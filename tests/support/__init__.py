"""What the tests share besides fixtures: the appliance as a subprocess, test models, in-process references.

Tests import from the ``appliance`` package and from here, never from ``benchmarks``.
"""
