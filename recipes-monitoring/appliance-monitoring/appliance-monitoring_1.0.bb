SUMMARY = "Grafana dashboard and Prometheus alert rules for ML Inference Appliances"
DESCRIPTION = "Files for the fleet's monitoring server (not for the device): a Grafana \
dashboard and Prometheus alert rules over the metrics appliance.service exposes on /metrics."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = " \
    file://appliance-alerts.rules.yml \
    file://appliance-dashboard.json \
"

S = "${UNPACKDIR}"

inherit allarch deploy

APPLIANCE_MONITORING_DIR = "${datadir}/appliance/monitoring"

do_install() {
    install -Dm 0644 ${S}/appliance-alerts.rules.yml ${D}${APPLIANCE_MONITORING_DIR}/prometheus/appliance-alerts.rules.yml
    install -Dm 0644 ${S}/appliance-dashboard.json ${D}${APPLIANCE_MONITORING_DIR}/grafana/appliance-dashboard.json
}

# Also next to the image, where whoever runs the monitoring server picks them up.
do_deploy() {
    install -Dm 0644 ${S}/appliance-alerts.rules.yml ${DEPLOYDIR}/appliance-monitoring/appliance-alerts.rules.yml
    install -Dm 0644 ${S}/appliance-dashboard.json ${DEPLOYDIR}/appliance-monitoring/appliance-dashboard.json
}
addtask deploy after do_install before do_build

FILES:${PN} += "${APPLIANCE_MONITORING_DIR}"
