# The settings of A/B updates, shared by the update bundle (ml-inference-update) and the device's
# side (appliance-update-config). Set the key and certificate in the build configuration
# (kas local_conf_header or local.conf), never in the layer:
#   APPLIANCE_UPDATE_KEY = "/secure/appliance-update.key.pem"
#   APPLIANCE_UPDATE_CERT = "/secure/appliance-update.crt.pem"
APPLIANCE_UPDATE_KEY ??= ""
APPLIANCE_UPDATE_CERT ??= ""
# The hardware revision in /etc/hwrevision and in the bundle's hardware-compatibility.
APPLIANCE_UPDATE_HWREVISION ??= "1.0"
# Where the bootloader capsule is staged for UEFI (the ESP is mounted on /boot/efi).
TEGRA_SWUPDATE_CAPSULE_INSTALL_PATH ??= "/boot/efi/EFI/UpdateCapsule/TEGRA_BL.Cap"
