"""Benchmarks of the appliance: load generator, reference servers (run ``python benchmarks/serving.py --help``)."""
