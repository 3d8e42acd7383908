SUMMARY = "ML Inference Appliance inference service"
DESCRIPTION = "Serves ONNX, TensorRT and Triton models over the KServe v2 / Open Inference \
Protocol (REST and gRPC) with dynamic batching. Built from the git HEAD of the checkout \
that holds meta-inference, so the image carries exactly that commit."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://LICENSE;md5=b19f81e63e9282ab2f9a3efc82585b80"

PV = "0.1.0+git"

SRC_URI = " \
    git://${INFERENCE_SRCDIR};protocol=file;nobranch=1 \
    file://appliance.service.in \
    file://appliance-admin-key.service.in \
    file://tmpfiles-appliance.conf.in \
"
SRCREV = "${INFERENCE_BUILD_ID}"

# SRCREV follows the checkout's HEAD: parse this recipe afresh every time.
BB_DONT_CACHE = "1"

inherit python_hatchling systemd appliance-paths

# The configuration file is appliance-conf's: a product changes settings there (weak defaults, ??=).
APPLIANCE_TEMPLATES = "appliance.service appliance-admin-key.service tmpfiles-appliance.conf"

do_compile:append() {
    for t in ${APPLIANCE_TEMPLATES}; do
        sed -e 's,@BINDIR@,${bindir},g' \
            -e 's,@APPLIANCE_CONFIG@,${APPLIANCE_CONFIG},g' \
            -e 's,@MODEL_REPOSITORY@,${APPLIANCE_MODEL_REPOSITORY},g' \
            -e 's,@KEYS_FILE@,${APPLIANCE_KEYS_FILE},g' \
            -e 's,@ADMIN_KEY_FILE@,${APPLIANCE_ADMIN_KEY_FILE},g' \
            -e 's,@STATEDIR@,${APPLIANCE_STATEDIR},g' \
            ${UNPACKDIR}/$t.in > ${B}/$t
    done
}

do_install:append() {
    install -Dm 0644 ${B}/appliance.service ${D}${systemd_system_unitdir}/appliance.service
    install -Dm 0644 ${B}/appliance-admin-key.service ${D}${systemd_system_unitdir}/appliance-admin-key.service
    install -Dm 0644 ${B}/tmpfiles-appliance.conf ${D}${nonarch_libdir}/tmpfiles.d/appliance.conf
}

SYSTEMD_SERVICE:${PN} = "appliance.service appliance-admin-key.service"

# Every module the package imports, the standard library's packages included (and openssl, which checks the
# signature of an update bundle) (tests/test_image_imports.py
# checks it against OE's python3-manifest.json at the pinned commit).
RDEPENDS:${PN} = " \
    appliance-conf \
    inference-users \
    openssl-bin \
    python3-asyncio \
    python3-compression \
    python3-crypt \
    python3-cryptography \
    python3-ctypes \
    python3-datetime \
    python3-fastapi \
    python3-grpcio \
    python3-html \
    python3-io \
    python3-json \
    python3-logging \
    python3-math \
    python3-mmap \
    python3-netclient \
    python3-numpy \
    python3-onnx \
    python3-onnxruntime \
    python3-pillow \
    python3-prometheus-client \
    python3-protobuf \
    python3-pydantic \
    python3-pydantic-settings \
    python3-pyjwt \
    python3-python-multipart \
    python3-starlette \
    python3-threading \
    python3-tomllib \
    python3-unixadmin \
    python3-uvicorn \
    python3-websockets \
    triton-client \
"
