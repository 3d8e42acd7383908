SUMMARY = "systemd unit for NVIDIA Triton Inference Server on the appliance"
DESCRIPTION = "Runs tritonserver as the triton user in explicit model-control mode, on \
loopback ports 8100 (HTTP), 8101 (gRPC) and 8102 (metrics), next to appliance.service."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://tritonserver.service.in"

S = "${UNPACKDIR}"

inherit systemd

# Triton shares the appliance's model repository (read-only): the appliance loads models into it
# over gRPC (explicit model control) with the config from their config.pbtxt.
TRITON_MODEL_REPOSITORY ??= "${localstatedir}/lib/appliance/models"

do_compile() {
    sed -e 's,@BINDIR@,${bindir},g' \
        -e 's,@TRITON_MODEL_REPOSITORY@,${TRITON_MODEL_REPOSITORY},g' \
        ${S}/tritonserver.service.in > ${B}/tritonserver.service
}

do_install() {
    install -Dm 0644 ${B}/tritonserver.service ${D}${systemd_system_unitdir}/tritonserver.service
}

SYSTEMD_SERVICE:${PN} = "tritonserver.service"

RDEPENDS:${PN} = " \
    inference-users \
    triton-server \
"

COMPATIBLE_MACHINE = "(cuda)"
