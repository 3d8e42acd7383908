"""ML Inference Appliance: an Open Inference Protocol (KServe v2) server with dynamic batching."""

__version__ = "0.1.0"
