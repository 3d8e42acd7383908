"""What an engine is tied to: the TensorRT version and the GPU (and DLA cores) of the device it runs on.

Read from the files of a Jetson (an injectable root, so tests and reference builds pass their own), and from
``tensorrt``/``pycuda`` when they are installed. A device description can also be a JSON file, written by
``trt-optimize device`` on a reference module and passed with ``--device``.

- TensorRT version: ``tensorrt.__version__``, else the version in the ``libnvinfer.so.X.Y.Z`` file name.
- GPU name and compute capability: ``pycuda.driver.Device(0)``, else the SoC in ``/proc/device-tree/compatible``.
- DLA cores: ``tensorrt.Builder.num_DLA_cores``, else the ``nvdla`` devices under ``/sys/devices/platform``.
- L4T release: ``/etc/nv_tegra_release`` (``# R36 (release), REVISION: 4.0, ...`` is 36.4.0).
- Module: ``/proc/device-tree/model`` (e.g. ``NVIDIA Jetson AGX Orin Developer Kit``).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import ModuleType

from .errors import OptimizeError

#: Tegra SoCs by device-tree ``compatible`` string: the integrated GPU's name and compute capability.
TEGRA_GPUS = {
    "nvidia,tegra234": ("Orin (nvgpu)", "8.7"),
    "nvidia,tegra194": ("Xavier", "7.2"),
}


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """The facts an engine depends on. Empty strings mean "not known here"."""

    tensorrt_version: str = ""
    gpu_name: str = ""
    compute_capability: str = ""  # "8.7"
    dla_cores: int = 0
    l4t_release: str = ""  # "36.4.0"
    module: str = ""  # "NVIDIA Jetson AGX Orin Developer Kit"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def read_device_json(path: Path) -> DeviceInfo:
    """A device description written by ``trt-optimize device``; errors name the file and line."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise OptimizeError(f"{path}: cannot read device description: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise OptimizeError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise OptimizeError(f"{path}: a device description is a JSON object")
    known = {f.name for f in fields(DeviceInfo)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise OptimizeError(f"{path}: unknown keys {unknown} (known: {sorted(known)})")
    try:
        dla = int(data.get("dla_cores", 0))
    except (TypeError, ValueError):
        raise OptimizeError(f"{path}: dla_cores must be an integer, got {data['dla_cores']!r}") from None
    values = {k: str(v) for k, v in data.items() if k != "dla_cores"}
    return DeviceInfo(**values, dla_cores=dla)


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace").replace("\x00", "\n").strip()
    except OSError:
        return ""


def l4t_release(root: Path) -> str:
    text = _read_text(root / "etc" / "nv_tegra_release")
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else ""


def _tensorrt_version_from_libs(root: Path) -> str:
    versions = []
    for pattern in ("usr/lib/libnvinfer.so.*", "usr/lib/*/libnvinfer.so.*"):
        for lib in root.glob(pattern):
            match = re.fullmatch(r"libnvinfer\.so\.(\d+\.\d+\.\d+(?:\.\d+)?)", lib.name)
            if match:
                versions.append(match.group(1))
    return max(versions, key=lambda v: tuple(int(p) for p in v.split(".")), default="")


def _dla_cores_from_sysfs(root: Path) -> int:
    platform = root / "sys" / "devices" / "platform"
    if not platform.is_dir():
        return 0
    names = {p.name for depth in ("*", "*/*", "*/*/*") for p in platform.glob(depth) if ".nvdla" in p.name}
    return len(names)


def check_tensorrt_pairing(binding: str, library: str) -> None:
    """The TensorRT Python binding and the runtime library must be one release: an engine's manifest records the
    binding's version, and an engine runs only on the library it was built with. In the image, meta-tegra's
    ``python3-tensorrt`` (the bindings of TensorRT's open-source release 10.13.3) is compiled against
    ``tensorrt-core`` 10.16.2's headers, so it reports 10.16.2 and links libnvinfer 10.16.2: a pair. A binding
    from elsewhere (pip) that reports another release is refused, naming both. OptimizeError when they differ
    in major.minor.patch; nothing to check when the library is not found by file name."""

    def release(version: str) -> tuple[str, ...]:
        return tuple(version.split(".")[:3])

    if binding and library and release(binding) != release(library):
        raise OptimizeError(
            f"the TensorRT Python binding reports {binding} but the runtime library is libnvinfer {library}: "
            "engines built or checked with this pair would be labelled with the wrong version; install the "
            "binding built for this runtime (the image's python3-tensorrt)"
        )


def describe_device(
    root: Path = Path("/"), tensorrt: ModuleType | None = None, cuda: ModuleType | None = None
) -> DeviceInfo:
    """This device, from files under ``root`` and, when given, the ``tensorrt`` and ``pycuda.driver`` modules
    (whose version must pair with the libnvinfer under ``root``: :func:`check_tensorrt_pairing`)."""
    compatible = _read_text(root / "proc" / "device-tree" / "compatible").split("\n")
    gpu_name, capability = next((TEGRA_GPUS[c] for c in compatible if c in TEGRA_GPUS), ("", ""))
    if cuda is not None:
        cuda.init()
        device = cuda.Device(0)
        gpu_name = str(device.name())
        major, minor = device.compute_capability()
        capability = f"{major}.{minor}"
    library_version = _tensorrt_version_from_libs(root)
    trt_version = str(tensorrt.__version__) if tensorrt is not None else library_version
    if tensorrt is not None:
        check_tensorrt_pairing(trt_version, library_version)
    dla = _dla_cores_from_sysfs(root)
    if tensorrt is not None:
        builder = tensorrt.Builder(tensorrt.Logger(tensorrt.Logger.ERROR))
        dla = int(builder.num_DLA_cores)
    return DeviceInfo(
        tensorrt_version=trt_version,
        gpu_name=gpu_name,
        compute_capability=capability,
        dla_cores=dla,
        l4t_release=l4t_release(root),
        module=_read_text(root / "proc" / "device-tree" / "model"),
    )


def import_tensorrt() -> tuple[ModuleType | None, ModuleType | None]:
    """``tensorrt`` and ``pycuda.driver`` when installed; (None, None) parts otherwise."""
    try:
        import tensorrt
    except ImportError:
        tensorrt = None
    try:
        import pycuda.driver as cuda
    except ImportError:
        cuda = None
    return tensorrt, cuda


def this_device(root: Path = Path("/")) -> DeviceInfo:
    trt, cuda = import_tensorrt()
    return describe_device(root, trt, cuda)
