"""The device the appliance runs on, read from sysfs and procfs: GPU load and frequency, temperatures and
throttling, power rails, memory (with the GPU's share), the power mode. Transport-free and independent of the
serving core; the server exports it as Prometheus metrics and through ``GET /v2/device``.

- ``files.py``: :class:`Files`, small text files under an injectable root (tests point it at a fake tree); a
  file missing or holding garbage reads as None and is logged once.
- ``jetson.py``: :class:`DeviceTelemetry`, the Jetson's nodes found by what they are (not fixed paths), found
  again while missing, and read into a typed :class:`DeviceSample`.
- ``metrics.py``: the Prometheus collector (``appliance_device_*``).

Triton on Jetson exports no GPU metrics (NVML does not exist there); jetson-stats (``jtop``) is AGPL-3.0 and a
root daemon of its own, so it is never imported: it ships in the image for a field engineer's terminal.
"""
