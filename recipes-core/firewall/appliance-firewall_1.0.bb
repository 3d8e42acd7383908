SUMMARY = "nftables firewall of the ML Inference Appliance"
DESCRIPTION = "Drops everything inbound but SSH (22), HTTP (80, nginx's redirect to https) and HTTPS (443: \
REST, WebSocket and gRPC through nginx), loopback, replies and the ICMP/ICMPv6 that IP needs; forwards nothing. \
Loaded by appliance-firewall.service before the network is configured."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = " \
    file://appliance-firewall.nft \
    file://appliance-firewall.service.in \
"

S = "${UNPACKDIR}"

inherit allarch systemd

# meta-networking's nftables ships nft and no unit: appliance-firewall.service is ours.
do_compile() {
    sed -e 's,@SBINDIR@,${sbindir},g' \
        -e 's,@SYSCONFDIR@,${sysconfdir},g' \
        ${S}/appliance-firewall.service.in > ${B}/appliance-firewall.service
}

do_install() {
    install -Dm 0644 ${S}/appliance-firewall.nft ${D}${sysconfdir}/nftables.conf
    install -Dm 0644 ${B}/appliance-firewall.service ${D}${systemd_system_unitdir}/appliance-firewall.service
}

SYSTEMD_SERVICE:${PN} = "appliance-firewall.service"

CONFFILES:${PN} = "${sysconfdir}/nftables.conf"

RDEPENDS:${PN} = "nftables"
# The kernel parts the ruleset uses, where the kernel builds them as modules (nothing when built in).
RRECOMMENDS:${PN} = " \
    kernel-module-nf-conntrack \
    kernel-module-nf-tables \
    kernel-module-nft-ct \
"
