SUMMARY = "Prebuilt TensorRT engines of the appliance's models, verified at every boot"
DESCRIPTION = "Installs the model repository of engines built on a reference module of this \
MACHINE (trt-optimize build: model.onnx, model.plan, model.plan.json manifest, config.pbtxt) \
into the appliance's model repository, and a oneshot unit that runs trt-optimize boot before \
the services: it keeps engines that match the device and serves the others on ONNX Runtime \
until appliance-engines-rebuild.service has rebuilt them after boot, when the service swaps \
them over; a model whose rebuild fails stays on ONNX Runtime. See docs/optimize.md."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = " \
    file://appliance-engines.service.in \
    file://appliance-engines-rebuild.service.in \
"

S = "${UNPACKDIR}"

inherit systemd appliance-paths

# The folder of engines built for this MACHINE on its reference module, set in the build
# configuration (a kas local_conf_header, or local.conf), e.g.
#   APPLIANCE_ENGINES_DIR:jetson-agx-orin-devkit = "/srv/engines/jetson-agx-orin-devkit"
# Empty: no prebuilt engines; the unit is still installed and finds nothing to do.
APPLIANCE_ENGINES_DIR ??= ""

# The engines' files are part of the task signature: a new engine rebuilds the package.
do_install[file-checksums] += "${@'${APPLIANCE_ENGINES_DIR}/:True' if d.getVar('APPLIANCE_ENGINES_DIR') else ''}"

do_compile() {
    for u in appliance-engines.service appliance-engines-rebuild.service; do
        sed -e 's,@BINDIR@,${bindir},g' \
            -e 's,@MODEL_REPOSITORY@,${APPLIANCE_MODEL_REPOSITORY},g' \
            -e 's,@CACHEDIR@,${localstatedir}/cache/appliance,g' \
            -e 's,@ADMIN_KEY_FILE@,${APPLIANCE_ADMIN_KEY_FILE},g' \
            -e 's,@HTTP_PORT@,${APPLIANCE_HTTP_PORT},g' \
            ${S}/$u.in > ${B}/$u
    done
}

do_install() {
    install -Dm 0644 ${B}/appliance-engines.service ${D}${systemd_system_unitdir}/appliance-engines.service
    install -Dm 0644 ${B}/appliance-engines-rebuild.service ${D}${systemd_system_unitdir}/appliance-engines-rebuild.service
    install -d ${D}${APPLIANCE_MODEL_REPOSITORY}
    if [ -n "${APPLIANCE_ENGINES_DIR}" ]; then
        if [ ! -d "${APPLIANCE_ENGINES_DIR}" ]; then
            bbfatal "APPLIANCE_ENGINES_DIR ${APPLIANCE_ENGINES_DIR} is not a folder"
        fi
        cp -R --no-preserve=ownership ${APPLIANCE_ENGINES_DIR}/. ${D}${APPLIANCE_MODEL_REPOSITORY}/
        # The reference device's description is for trt-optimize verify at build time, not for the image.
        rm -f ${D}${APPLIANCE_MODEL_REPOSITORY}/device.json
    fi
    # Owned by root here; systemd hands StateDirectory= to the appliance user at the first start.
}

PACKAGE_ARCH = "${MACHINE_ARCH}"

SYSTEMD_SERVICE:${PN} = "appliance-engines.service appliance-engines-rebuild.service"

FILES:${PN} += "${APPLIANCE_MODEL_REPOSITORY}"

RDEPENDS:${PN} = " \
    appliance \
    inference-users \
    python3-pycuda \
    python3-tensorrt \
"

COMPATIBLE_MACHINE = "(cuda)"
