SUMMARY = "nginx TLS front for the appliance's REST and gRPC APIs"
DESCRIPTION = "nginx site that terminates TLS on port 443 with a per-device certificate made \
at first boot (named after the module's serial number), limits request bodies and rate, and forwards \
REST, WebSocket and KServe v2 gRPC to appliance.service on loopback; port 80 only redirects to https."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = " \
    file://appliance-proxy.conf.in \
    file://appliance-tls-cert.service.in \
    file://appliance-tls-cert.sh.in \
    file://nginx-appliance.conf \
"

S = "${UNPACKDIR}"

inherit systemd appliance-paths

# Keep in step with max_request_bytes in appliance.toml.
APPLIANCE_PROXY_MAX_BODY ??= "64m"
APPLIANCE_PROXY_RATE ??= "200r/s"
APPLIANCE_PROXY_BURST ??= "400"
# Keep in step with update_max_bytes in appliance.toml (8 GiB): the largest update bundle.
APPLIANCE_PROXY_UPDATE_MAX_BODY ??= "8g"
APPLIANCE_TLS_DIR ?= "${sysconfdir}/appliance/tls"
# The loopback ports of appliance.service: APPLIANCE_HTTP_PORT and APPLIANCE_GRPC_PORT (appliance-paths).

do_compile() {
    sed -e 's,@APPLIANCE_TLS_DIR@,${APPLIANCE_TLS_DIR},g' \
        -e 's,@MAX_BODY@,${APPLIANCE_PROXY_MAX_BODY},g' \
        -e 's,@RATE@,${APPLIANCE_PROXY_RATE},g' \
        -e 's,@BURST@,${APPLIANCE_PROXY_BURST},g' \
        -e 's,@HTTP_PORT@,${APPLIANCE_HTTP_PORT},g' \
        -e 's,@GRPC_PORT@,${APPLIANCE_GRPC_PORT},g' \
        -e 's,@UPDATE_MAX_BODY@,${APPLIANCE_PROXY_UPDATE_MAX_BODY},g' \
        ${S}/appliance-proxy.conf.in > ${B}/appliance-proxy.conf
    sed -e 's,@SBINDIR@,${sbindir},g' \
        -e 's,@APPLIANCE_TLS_DIR@,${APPLIANCE_TLS_DIR},g' \
        ${S}/appliance-tls-cert.service.in > ${B}/appliance-tls-cert.service
    sed -e 's,@BINDIR@,${bindir},g' \
        ${S}/appliance-tls-cert.sh.in > ${B}/appliance-tls-cert
}

do_install() {
    install -Dm 0644 ${B}/appliance-proxy.conf ${D}${sysconfdir}/nginx/conf.d/appliance-proxy.conf
    install -Dm 0644 ${B}/appliance-tls-cert.service ${D}${systemd_system_unitdir}/appliance-tls-cert.service
    install -Dm 0755 ${B}/appliance-tls-cert ${D}${sbindir}/appliance-tls-cert
    install -Dm 0644 ${S}/nginx-appliance.conf ${D}${systemd_system_unitdir}/nginx.service.d/appliance.conf
}

SYSTEMD_SERVICE:${PN} = "appliance-tls-cert.service"

FILES:${PN} += "${systemd_system_unitdir}/nginx.service.d"
CONFFILES:${PN} = "${sysconfdir}/nginx/conf.d/appliance-proxy.conf"

RDEPENDS:${PN} = " \
    nginx \
    openssl-bin \
"
