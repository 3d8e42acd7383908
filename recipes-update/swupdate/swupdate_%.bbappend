# SWUpdate as the appliance uses it (appliance-update distro feature): a standalone installer run by
# 'appliance update apply' (no daemon), with signed bundles (CMS), mandatory hashes, raw archives
# into an ext4 slot it formats, and no U-Boot environment (the Jetson's slots are UEFI's, through
# nvbootctrl). As OE4T's tegra-demo-distro configures it, plus signatures. Only with the
# ml-inference distro override and the feature, so the layer changes nothing for anyone else.
DEPENDS:append:ml-inference = "${@bb.utils.contains('DISTRO_FEATURES', 'appliance-update', ' e2fsprogs', '', d)}"

FILESEXTRAPATHS:prepend:ml-inference := "${THISDIR}/files:"
SRC_URI:append:ml-inference = "${@bb.utils.contains('DISTRO_FEATURES', 'appliance-update', ' file://appliance-update.cfg', '', d)}"

# The appliance runs swupdate itself, as root, only for a bundle it has verified: no listening daemon.
SYSTEMD_AUTO_ENABLE:${PN}:ml-inference = "${@bb.utils.contains('DISTRO_FEATURES', 'appliance-update', 'disable', 'enable', d)}"
