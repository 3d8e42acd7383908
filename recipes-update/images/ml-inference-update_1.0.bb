SUMMARY = "Signed A/B update bundle (.swu) of ml-inference-image"
DESCRIPTION = "SWUpdate bundle holding the root filesystem of ml-inference-image and the \
bootloader capsule of this MACHINE, signed with the product's update key. 'appliance update \
apply' installs it into the slot that does not run; the new slot is kept only once the \
appliance is healthy on it (appliance-update-confirm.service). See docs/updates.md."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = " \
    file://sw-description \
    file://appliance-update.lua \
"

inherit swupdate l4t_version appliance-update features_check

# Without the feature the image has no second slot to update.
REQUIRED_DISTRO_FEATURES = "appliance-update"

ROOTFS_DEVICE_PATH ?= "/dev/disk/by-partlabel"
APPLIANCE_UPDATE_IMAGE ?= "ml-inference-image"
ROOTFS_FILENAME ?= "${APPLIANCE_UPDATE_IMAGE}-${MACHINE}.rootfs.tar.gz"
TEGRA_SWUPDATE_BOOTLOADER_VERSION ?= "${L4T_VERSION}"

IMAGE_DEPENDS = "${APPLIANCE_UPDATE_IMAGE}"
SWUPDATE_IMAGES = "${ROOTFS_FILENAME} tegra-bl.cap"
do_swuimage[depends] += "tegra-uefi-capsules:do_deploy"

# Signed with the product's key (CMS); the device holds the certificate (appliance-update-config).
# appliance-update.lua (SRC_URI) goes into the bundle too: it stages the bootloader capsule.
SWUPDATE_SIGNING = "CMS"
SWUPDATE_CMS_CERT = "${APPLIANCE_UPDATE_CERT}"
SWUPDATE_CMS_KEY = "${APPLIANCE_UPDATE_KEY}"

# A clear error instead of openssl's when the key or certificate is not given.
python appliance_update_check_keys () {
    import os
    for name in ('APPLIANCE_UPDATE_CERT', 'APPLIANCE_UPDATE_KEY'):
        path = d.getVar(name)
        if not path or not os.path.isfile(path):
            bb.fatal("%s = '%s' is not a file: set the update signing certificate and key in the build "
                     "configuration (see docs/updates.md)" % (name, path or ''))
}
do_swuimage[prefuncs] += "appliance_update_check_keys"

COMPATIBLE_MACHINE = "(tegra)"
