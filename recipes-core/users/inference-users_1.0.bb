# nooelint: oelint.var.mandatoryvar.SRC_URI - users only, nothing to fetch
SUMMARY = "System users of the ML Inference Appliance"
DESCRIPTION = "The unprivileged system users and groups that appliance.service (appliance) \
and tritonserver.service (triton) run as."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

inherit allarch useradd

USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = " \
    --system --user-group --no-create-home --home-dir ${localstatedir}/lib/appliance \
        --shell ${base_sbindir}/nologin --comment 'ML Inference Appliance' appliance; \
    --system --user-group --no-create-home --home-dir ${localstatedir}/lib/triton \
        --shell ${base_sbindir}/nologin --comment 'Triton Inference Server' triton \
"

ALLOW_EMPTY:${PN} = "1"
