SUMMARY = "ML Inference Appliance inference service"
DESCRIPTION = "Serves ONNX, TensorRT and Triton models over the KServe v2 / Open Inference \
Protocol (REST and gRPC) with dynamic batching. Built from the git HEAD of the checkout \
that holds meta-inference, so the image carries exactly that commit."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://LICENSE;md5=b19f81e63e9282ab2f9a3efc82585b80"

PV = "0.1.0+git"

SRC_URI = " \
    git://${INFERENCE_SRCDIR};protocol=file;nobranch=1 \
    file://appliance.service.in \
    file://appliance.toml.in \
"
SRCREV = "${INFERENCE_BUILD_ID}"

# SRCREV follows the checkout's HEAD: parse this recipe afresh every time.
BB_DONT_CACHE = "1"

inherit python_hatchling systemd

APPLIANCE_MODEL_REPOSITORY ??= "${localstatedir}/lib/appliance/models"
APPLIANCE_CONFIG ?= "${sysconfdir}/appliance/appliance.toml"

do_compile:append() {
    sed -e 's,@BINDIR@,${bindir},g' \
        -e 's,@APPLIANCE_CONFIG@,${APPLIANCE_CONFIG},g' \
        ${UNPACKDIR}/appliance.service.in > ${B}/appliance.service
    sed -e 's,@MODEL_REPOSITORY@,${APPLIANCE_MODEL_REPOSITORY},g' \
        ${UNPACKDIR}/appliance.toml.in > ${B}/appliance.toml
}

do_install:append() {
    install -Dm 0644 ${B}/appliance.service ${D}${systemd_system_unitdir}/appliance.service
    install -Dm 0644 ${B}/appliance.toml ${D}${APPLIANCE_CONFIG}
}

SYSTEMD_SERVICE:${PN} = "appliance.service"

CONFFILES:${PN} = "${APPLIANCE_CONFIG}"

RDEPENDS:${PN} = " \
    inference-users \
    python3-fastapi \
    python3-grpcio \
    python3-numpy \
    python3-onnx \
    python3-onnxruntime \
    python3-prometheus-client \
    python3-protobuf \
    python3-pydantic \
    python3-pydantic-settings \
    python3-uvicorn \
    triton-client \
"
