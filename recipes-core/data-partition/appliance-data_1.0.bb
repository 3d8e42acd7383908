SUMMARY = "The appliance's data partition: what updates never touch"
DESCRIPTION = "Mounts the data partition on /data (checked, repaired, or made and seeded at boot \
by 'appliance data prepare') and binds its folders over /var/lib/appliance (API keys, routes, \
audit log, models, rebuilt engines) and /etc/appliance (configuration, TLS key), so that an A/B \
update, which replaces the root filesystem, keeps them. Without the partition the appliance \
keeps its state on the root filesystem and says so."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = " \
    file://appliance-data-prepare.service.in \
    file://data.mount.in \
    file://etc-appliance.mount \
    file://var-lib-appliance.mount \
    file://tmpfiles-appliance-data.conf \
"

S = "${UNPACKDIR}"

inherit systemd

# NVIDIA's user data partition (UDA) of the Orin flash layouts; a product with its own layout sets its own.
APPLIANCE_DATA_DEVICE ??= "/dev/disk/by-partlabel/UDA"
# The partition's device unit, as systemd names it (systemd-escape --path).
APPLIANCE_DATA_DEVICE_UNIT = "${@d.getVar('APPLIANCE_DATA_DEVICE').strip('/').replace('-', '\\x2d').replace('/', '-')}.device"

do_compile() {
    for t in appliance-data-prepare.service data.mount; do
        sed -e 's,@BINDIR@,${bindir},g' \
            -e 's,@DATA_DEVICE@,${APPLIANCE_DATA_DEVICE},g' \
            ${S}/$t.in > ${B}/$t
    done
    # Wait 15 s, not systemd's 90 s, for a partition that is not there: the appliance then comes up on
    # the root filesystem (what x-systemd.device-timeout= does for /etc/fstab).
    printf '[Unit]\nJobRunningTimeoutSec=15s\n' > ${B}/device-timeout.conf
}

do_install() {
    for u in appliance-data-prepare.service data.mount; do
        install -Dm 0644 ${B}/$u ${D}${systemd_system_unitdir}/$u
    done
    for u in etc-appliance.mount var-lib-appliance.mount; do
        install -Dm 0644 ${S}/$u ${D}${systemd_system_unitdir}/$u
    done
    install -Dm 0644 ${B}/device-timeout.conf \
        "${D}${systemd_system_unitdir}/${APPLIANCE_DATA_DEVICE_UNIT}.d/appliance-data.conf"
    install -Dm 0644 ${S}/tmpfiles-appliance-data.conf ${D}${nonarch_libdir}/tmpfiles.d/appliance-data.conf
    install -d ${D}/data
}

SYSTEMD_SERVICE:${PN} = "appliance-data-prepare.service data.mount etc-appliance.mount var-lib-appliance.mount"

FILES:${PN} += " \
    /data \
    ${nonarch_libdir}/tmpfiles.d \
    ${systemd_system_unitdir} \
"

RDEPENDS:${PN} = " \
    appliance \
    e2fsprogs-e2fsck \
    e2fsprogs-mke2fs \
    util-linux-blkid \
"
