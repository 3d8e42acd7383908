SUMMARY = "Dashboards, alert rules and scrape configuration for appliance fleets"
DESCRIPTION = "Files for the fleet's monitoring server (not for the device): Grafana dashboards \
(serving; device and autoscaler), Prometheus alert rules and a scrape configuration over the \
metrics appliance.service exposes on /metrics."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = " \
    file://appliance-alerts.rules.yml \
    file://appliance-scrape.yml \
    file://appliance-serving.json \
    file://appliance-device.json \
"

S = "${UNPACKDIR}"

inherit allarch deploy

APPLIANCE_MONITORING_DIR = "${datadir}/appliance/monitoring"
APPLIANCE_PROMETHEUS_FILES = "appliance-alerts.rules.yml appliance-scrape.yml"
APPLIANCE_GRAFANA_FILES = "appliance-serving.json appliance-device.json"

do_install() {
    for f in ${APPLIANCE_PROMETHEUS_FILES}; do
        install -Dm 0644 ${S}/$f ${D}${APPLIANCE_MONITORING_DIR}/prometheus/$f
    done
    for f in ${APPLIANCE_GRAFANA_FILES}; do
        install -Dm 0644 ${S}/$f ${D}${APPLIANCE_MONITORING_DIR}/grafana/$f
    done
}

# Also next to the image, where whoever runs the monitoring server picks them up.
do_deploy() {
    for f in ${APPLIANCE_PROMETHEUS_FILES} ${APPLIANCE_GRAFANA_FILES}; do
        install -Dm 0644 ${S}/$f ${DEPLOYDIR}/appliance-monitoring/$f
    done
}
addtask deploy after do_install before do_build

FILES:${PN} += "${APPLIANCE_MONITORING_DIR}"
