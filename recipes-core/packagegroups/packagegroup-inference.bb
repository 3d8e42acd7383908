SUMMARY = "ML Inference Appliance package groups"
DESCRIPTION = "The service and its TLS front, the GPU inference runtimes, and the tools \
a field engineer needs on the device."
LICENSE = "MIT"

inherit packagegroup

PACKAGES = " \
    ${PN}-service \
    ${PN}-gpu \
    ${PN}-tools \
"

RDEPENDS:${PN}-service = " \
    appliance \
    appliance-autoscaler \
    appliance-data \
    appliance-firewall \
    appliance-proxy \
    ${@'appliance-update-config' if bb.utils.contains('DISTRO_FEATURES', 'appliance-update', True, False, d) and bb.utils.contains('BBFILE_COLLECTIONS', 'swupdate', True, False, d) else ''} \
"
# TensorRT and pycuda are used in process by the TensorRT backend; Triton is driven over gRPC.
RDEPENDS:${PN}-gpu = " \
    appliance-engines \
    python3-pycuda \
    python3-tensorrt \
    tensorrt-core \
    triton-server \
    tritonserver-service \
"
# The field engineer's way in: SSH with keys, sudo for the appliance's units.
RDEPENDS:${PN}-tools = " \
    engineer-access \
    tegra-nvpmodel \
    tegra-tools-jetson-clocks \
    tegra-tools-tegrastats \
"
