SUMMARY = "ML Inference Appliance image for Jetson Orin modules"
DESCRIPTION = "Headless systemd image that serves models over KServe v2 REST (nginx, TLS) \
and gRPC, with TensorRT, Triton and ONNX Runtime on the GPU."
LICENSE = "MIT"

IMAGE_FEATURES += "ssh-server-openssh"

IMAGE_INSTALL = " \
    packagegroup-core-boot \
    packagegroup-inference-gpu \
    packagegroup-inference-service \
    packagegroup-inference-tools \
    ${CORE_IMAGE_EXTRA_INSTALL} \
"

IMAGE_LINGUAS = ""

inherit core-image

# Flashed with initrd-flash from the .tegraflash-tar.zst archive, which meta-tegra's tegra-common.inc adds to
# IMAGE_FSTYPES. Not set here: a product adds its own types with IMAGE_FSTYPES += in its configuration.
# With A/B updates, the update bundle (ml-inference-update) carries the root filesystem as a tar archive.
IMAGE_FSTYPES:append = "${@bb.utils.contains('DISTRO_FEATURES', 'appliance-update', ' tar.gz', '', d)}"

# Room for model repositories and engines.
IMAGE_ROOTFS_EXTRA_SPACE = "2097152"

COMPATIBLE_MACHINE = "(tegra)"
