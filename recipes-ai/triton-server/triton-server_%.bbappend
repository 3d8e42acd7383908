FILESEXTRAPATHS:prepend := "${THISDIR}/files:"

SRC_URI:append = " file://tritonserver.service.in"

# meta-tegra-community builds "logging http gpu tensorrt": the appliance drives Triton over
# gRPC and scrapes its metrics.
PACKAGECONFIG:append = " grpc metrics"

inherit systemd

TRITON_MODEL_REPOSITORY ??= "${localstatedir}/lib/triton/models"

do_install:append() {
    sed -e 's,@BINDIR@,${bindir},g' \
        -e 's,@TRITON_MODEL_REPOSITORY@,${TRITON_MODEL_REPOSITORY},g' \
        ${UNPACKDIR}/tritonserver.service.in > ${B}/tritonserver.service
    install -Dm 0644 ${B}/tritonserver.service ${D}${systemd_system_unitdir}/tritonserver.service
}

SYSTEMD_SERVICE:${PN} = "tritonserver.service"

RDEPENDS:${PN}:append = " inference-users"
