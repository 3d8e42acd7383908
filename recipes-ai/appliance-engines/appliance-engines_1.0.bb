SUMMARY = "Prebuilt TensorRT engines of the appliance's models, verified at every boot"
DESCRIPTION = "Ships the engines built on a reference module of this MACHINE (trt-optimize \
build: model.onnx, model.plan, model.plan.json manifest, config.pbtxt), fetched with their \
sha256 and checked against their manifests and the image's TensorRT at build time, in \
/usr/share/appliance/engines; a oneshot unit runs trt-optimize boot before the services: it \
installs new shipped engines into the repository on the data partition, keeps engines that \
match the device and serves the others on ONNX Runtime until appliance-engines-rebuild.service \
has rebuilt them after boot, when the service swaps them over. See docs/optimize.md."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

# The engines are checked against the TensorRT the image carries: its headers give the version.
DEPENDS += "${@'tensorrt-core' if d.getVar('APPLIANCE_ENGINES_URI') else ''}"

SRC_URI = " \
    file://appliance-engines.service.in \
    file://appliance-engines-rebuild.service.in \
"

# The engines archive (APPLIANCE_ENGINES_URI, below), when a product gives one.
SRC_URI += "${@'${APPLIANCE_ENGINES_URI};name=engines;subdir=engines' if d.getVar('APPLIANCE_ENGINES_URI') else ''}"
SRC_URI[engines.sha256sum] = "${APPLIANCE_ENGINES_SHA256}"

S = "${UNPACKDIR}"

inherit systemd appliance-paths

# The engines of this MACHINE, built on its reference module with trt-optimize build (a
# repository: <model>/config.pbtxt, <model>/<version>/model.plan, model.plan.json, model.onnx),
# packed as a tar archive and fetched like any source, with its sha256, set per MACHINE in the
# build configuration (kas local_conf_header or local.conf), e.g.
#   APPLIANCE_ENGINES_URI:jetson-agx-orin-devkit = "https://models.example.com/engines-agx-orin-1.4.tar.gz"
#   APPLIANCE_ENGINES_SHA256:jetson-agx-orin-devkit = "<sha256 of that file>"
# Empty: no prebuilt engines; the units are still installed and find nothing to do.
APPLIANCE_ENGINES_URI ??= ""
APPLIANCE_ENGINES_SHA256 ??= ""
# Where the image keeps them, read-only; trt-optimize boot --shipped installs them into the
# repository on the data partition (first boot, and when an update ships new ones).
APPLIANCE_SHIPPED_ENGINES = "${datadir}/appliance/engines"

# Every engine is checked against its manifest before it goes into the image: the plan and ONNX
# files are the ones the manifest hashed, and the engine was built with the TensorRT release of
# this image (an engine runs only on the release it was built with) for this SoC's GPU.
python do_verify_engines () {
    import glob, hashlib, json, os, re
    if not d.getVar('APPLIANCE_ENGINES_URI'):
        return
    uri = d.getVar('APPLIANCE_ENGINES_URI')
    if len(d.getVar('APPLIANCE_ENGINES_SHA256') or '') != 64:
        bb.fatal("APPLIANCE_ENGINES_SHA256 must be the sha256 of %s (64 hex digits)" % uri)
    # bitbake does not checksum file:// sources: check the archive itself, whatever its scheme.
    local = bb.fetch2.Fetch([uri], d).localpath(uri)
    digest = hashlib.sha256()
    with open(local, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    if digest.hexdigest() != d.getVar('APPLIANCE_ENGINES_SHA256'):
        bb.fatal("%s: sha256 is %s, APPLIANCE_ENGINES_SHA256 says %s" % (uri, digest.hexdigest(), d.getVar('APPLIANCE_ENGINES_SHA256')))
    header = open(os.path.join(d.getVar('STAGING_INCDIR'), 'NvInferVersion.h')).read()
    parts = [re.search(r'#define TRT_%s_ENTERPRISE (\d+)' % p, header).group(1) for p in ('MAJOR', 'MINOR', 'PATCH')]
    image_trt = '.'.join(parts)
    capability = d.getVar('APPLIANCE_ENGINES_COMPUTE_CAPABILITY')
    root = os.path.join(d.getVar('UNPACKDIR'), 'engines')
    manifests = sorted(glob.glob(os.path.join(root, '**', '*.plan.json'), recursive=True))
    if not manifests:
        bb.fatal("%s holds no engine manifest (<model>/<version>/*.plan.json)" % uri)
    def sha256(path):
        h = hashlib.sha256()
        with open(path, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                h.update(chunk)
        return h.hexdigest()
    for manifest_path in manifests:
        name = os.path.relpath(manifest_path, root)
        m = json.load(open(manifest_path))
        folder = os.path.dirname(manifest_path)
        for kind in ('plan', 'onnx'):
            path = os.path.join(folder, m['%s_file' % kind])
            if not os.path.isfile(path):
                bb.fatal("%s: its %s file %s is missing" % (name, kind, m['%s_file' % kind]))
            if sha256(path) != m['%s_sha256' % kind]:
                bb.fatal("%s: %s does not match the sha256 in its manifest" % (name, m['%s_file' % kind]))
        if '.'.join(m['tensorrt_version'].split('.')[:3]) != image_trt:
            bb.fatal("%s: built with TensorRT %s, the image has TensorRT %s: rebuild it on a module with this image"
                     % (name, m['tensorrt_version'], image_trt))
        if capability and m['compute_capability'] != capability:
            bb.fatal("%s: built for compute capability %s, %s has %s" % (name, m['compute_capability'], d.getVar('MACHINE'), capability))
        bb.note("%s: verified (TensorRT %s, %s)" % (name, m['tensorrt_version'], m['precision']))
}
addtask verify_engines after do_prepare_recipe_sysroot do_unpack before do_install
do_verify_engines[vardeps] += "APPLIANCE_ENGINES_SHA256"

# The GPU of the SoC the engines must have been built for (Orin, tegra234: Ampere, 8.7).
APPLIANCE_ENGINES_COMPUTE_CAPABILITY ??= "${@{'tegra234': '8.7'}.get((d.getVar('SOC_FAMILY') or ''), '')}"

do_compile() {
    for u in appliance-engines.service appliance-engines-rebuild.service; do
        sed -e 's,@BINDIR@,${bindir},g' \
            -e 's,@MODEL_REPOSITORY@,${APPLIANCE_MODEL_REPOSITORY},g' \
            -e 's,@CACHEDIR@,${localstatedir}/cache/appliance,g' \
            -e 's,@ADMIN_KEY_FILE@,${APPLIANCE_ADMIN_KEY_FILE},g' \
            -e 's,@HTTP_PORT@,${APPLIANCE_HTTP_PORT},g' \
            -e 's,@SHIPPED_ENGINES@,${APPLIANCE_SHIPPED_ENGINES},g' \
            ${S}/$u.in > ${B}/$u
    done
}

do_install() {
    install -Dm 0644 ${B}/appliance-engines.service ${D}${systemd_system_unitdir}/appliance-engines.service
    install -Dm 0644 ${B}/appliance-engines-rebuild.service ${D}${systemd_system_unitdir}/appliance-engines-rebuild.service
    install -d ${D}${APPLIANCE_SHIPPED_ENGINES}
    if [ -n "${APPLIANCE_ENGINES_URI}" ]; then
        cp -R --no-preserve=ownership ${UNPACKDIR}/engines/. ${D}${APPLIANCE_SHIPPED_ENGINES}/
        # The reference device's description is for checking at build time, not for the image.
        rm -f ${D}${APPLIANCE_SHIPPED_ENGINES}/device.json
    fi
}

PACKAGE_ARCH = "${MACHINE_ARCH}"

SYSTEMD_SERVICE:${PN} = "appliance-engines.service appliance-engines-rebuild.service"

FILES:${PN} += "${APPLIANCE_SHIPPED_ENGINES}"

RDEPENDS:${PN} = " \
    appliance \
    inference-users \
    python3-pycuda \
    python3-tensorrt \
"

COMPATIBLE_MACHINE = "(cuda)"
