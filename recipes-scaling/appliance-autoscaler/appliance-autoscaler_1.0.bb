SUMMARY = "Autoscaler of the ML Inference Appliance"
DESCRIPTION = "appliance-autoscaler.service: sets each model's execution instances from its \
load (in-flight requests, p95 latency, GPU load) through the service's admin API, and steps the \
nvpmodel power mode where configured, through appliance-power-mode.path (root, narrow). The \
daemon is 'appliance autoscale' from the appliance package."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = " \
    file://appliance-autoscaler.service.in \
    file://appliance-power-mode.service.in \
    file://appliance-power-mode.path \
    file://autoscaler.toml.in \
"

S = "${UNPACKDIR}"

# appliance-paths: APPLIANCE_ADMIN_KEY_FILE, the admin key the service made at first boot
# (appliance-admin-key.service); the daemon gets it as a systemd credential, never the file itself.
inherit systemd appliance-paths

AUTOSCALER_CONFIG ?= "${sysconfdir}/appliance/autoscaler.toml"
# Where the service's REST API listens (appliance.toml's http_address and http_port).
AUTOSCALER_SERVICE_URL ??= "http://127.0.0.1:8000"
# "true": decide and log, change nothing (a product can start this way and read the decisions).
AUTOSCALER_DRY_RUN ??= "false"

AUTOSCALER_TEMPLATES = "appliance-autoscaler.service appliance-power-mode.service autoscaler.toml"

do_compile() {
    for t in ${AUTOSCALER_TEMPLATES}; do
        sed -e 's,@BINDIR@,${bindir},g' \
            -e 's,@SBINDIR@,${sbindir},g' \
            -e 's,@AUTOSCALER_CONFIG@,${AUTOSCALER_CONFIG},g' \
            -e 's,@ADMIN_KEY_FILE@,${APPLIANCE_ADMIN_KEY_FILE},g' \
            -e 's,@SERVICE_URL@,${AUTOSCALER_SERVICE_URL},g' \
            -e 's,@DRY_RUN@,${AUTOSCALER_DRY_RUN},g' \
            ${S}/$t.in > ${B}/$t
    done
}

do_install() {
    install -Dm 0644 ${B}/appliance-autoscaler.service ${D}${systemd_system_unitdir}/appliance-autoscaler.service
    install -Dm 0644 ${B}/appliance-power-mode.service ${D}${systemd_system_unitdir}/appliance-power-mode.service
    install -Dm 0644 ${S}/appliance-power-mode.path ${D}${systemd_system_unitdir}/appliance-power-mode.path
    install -Dm 0644 ${B}/autoscaler.toml ${D}${AUTOSCALER_CONFIG}
}

# appliance-power-mode.service is started by its .path unit only.
SYSTEMD_SERVICE:${PN} = "appliance-autoscaler.service appliance-power-mode.path"

CONFFILES:${PN} = "${AUTOSCALER_CONFIG}"

RDEPENDS:${PN} = "appliance"
