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
    appliance-proxy \
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
RDEPENDS:${PN}-tools = " \
    tegra-nvpmodel \
    tegra-tools-jetson-clocks \
    tegra-tools-tegrastats \
"
