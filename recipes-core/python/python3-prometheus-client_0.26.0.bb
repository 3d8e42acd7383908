SUMMARY = "Python client for the Prometheus monitoring system"
DESCRIPTION = "Instrumentation library for Prometheus: counters, gauges, histograms and the \
text exposition format that the appliance serves on /metrics."
HOMEPAGE = "https://github.com/prometheus/client_python"
LICENSE = "Apache-2.0 & BSD-2-Clause"
LIC_FILES_CHKSUM = " \
    file://LICENSE;md5=86d3f3a95c324c9479bd8986968f4327 \
    file://NOTICE;md5=4951b46e0743f84957d24051dcbdc0ae \
"

SRC_URI[sha256sum] = "04a91bcf94e2cf74a44a1a874d651a2e853ed354b6e822f3b7487751465d5c2b"

PYPI_PACKAGE = "prometheus_client"

inherit pypi python_setuptools_build_meta

RDEPENDS:${PN} = " \
    python3-core \
    python3-io \
    python3-json \
    python3-logging \
    python3-netclient \
    python3-threading \
"
