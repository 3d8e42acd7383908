SUMMARY = "A/B updates on the device: identity, update certificate, boot check"
DESCRIPTION = "/etc/hwrevision (MACHINE and hardware revision, checked against a bundle's \
hardware-compatibility), the certificate that update bundles must be signed for, and \
appliance-update-confirm.service, which marks a boot good only once the appliance is healthy on \
it and rolls a new slot back otherwise. NVIDIA's nv_update_verifier.service, which marks every \
boot good, is masked."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = " \
    file://appliance-update-confirm.service.in \
    file://appliance-update.service.in \
    file://appliance-update.path \
"

S = "${UNPACKDIR}"

inherit systemd appliance-paths appliance-update features_check

REQUIRED_DISTRO_FEATURES = "appliance-update"

# How long a new slot has to come up healthy before it is rolled back (seconds).
APPLIANCE_UPDATE_CONFIRM_TIMEOUT ??= "600"

# A new certificate rebuilds the package.
do_install[file-checksums] += "${@'${APPLIANCE_UPDATE_CERT}:True' if d.getVar('APPLIANCE_UPDATE_CERT') else ''}"

do_compile() {
    sed -e 's,@BINDIR@,${bindir},g' \
        -e 's,@ADMIN_KEY_FILE@,${APPLIANCE_ADMIN_KEY_FILE},g' \
        -e 's,@CONFIRM_TIMEOUT@,${APPLIANCE_UPDATE_CONFIRM_TIMEOUT},g' \
        ${S}/appliance-update-confirm.service.in > ${B}/appliance-update-confirm.service
    sed -e 's,@BINDIR@,${bindir},g' ${S}/appliance-update.service.in > ${B}/appliance-update.service
    # POST /v2/update (the service, group appliance) queues verified bundles here; root installs them.
    echo "d /data/update/spool 0770 root appliance -" > ${B}/tmpfiles-appliance-update.conf
    echo "${MACHINE} ${APPLIANCE_UPDATE_HWREVISION}" > ${B}/hwrevision
}

do_install() {
    if [ ! -f "${APPLIANCE_UPDATE_CERT}" ]; then
        bbfatal "APPLIANCE_UPDATE_CERT = '${APPLIANCE_UPDATE_CERT}' is not a file: set the update certificate in the build configuration (docs/updates.md)"
    fi
    install -Dm 0644 ${B}/hwrevision ${D}${sysconfdir}/hwrevision
    install -Dm 0644 ${APPLIANCE_UPDATE_CERT} ${D}${datadir}/swupdate/swupdate.pem
    install -Dm 0644 ${B}/appliance-update-confirm.service ${D}${systemd_system_unitdir}/appliance-update-confirm.service
    install -Dm 0644 ${B}/appliance-update.service ${D}${systemd_system_unitdir}/appliance-update.service
    install -Dm 0644 ${S}/appliance-update.path ${D}${systemd_system_unitdir}/appliance-update.path
    install -Dm 0644 ${B}/tmpfiles-appliance-update.conf ${D}${nonarch_libdir}/tmpfiles.d/appliance-update.conf
    install -d ${D}${sysconfdir}/systemd/system
    ln -sf /dev/null ${D}${sysconfdir}/systemd/system/nv_update_verifier.service
}

SYSTEMD_SERVICE:${PN} = "appliance-update-confirm.service appliance-update.path"

PACKAGE_ARCH = "${MACHINE_ARCH}"
FILES:${PN} += "${datadir}/swupdate ${nonarch_libdir}/tmpfiles.d"

RDEPENDS:${PN} = " \
    appliance \
    appliance-data \
    openssl-bin \
    setup-nv-boot-control \
    swupdate \
    tegra-redundant-boot \
"
