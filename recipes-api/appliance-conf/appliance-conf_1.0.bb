SUMMARY = "Settings of the ML Inference Appliance service"
DESCRIPTION = "/etc/appliance/appliance.toml for appliance.service, rendered from weak defaults (??=): \
a product sets APPLIANCE_* in its distro or local configuration, or bbappends this recipe alone \
(as meta-rauc's rauc-conf), and never the appliance recipe itself."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://appliance.toml.in"

S = "${UNPACKDIR}"

inherit allarch appliance-paths

# "explicit" (with load_model = ["*"]: every model is loaded at start) lets the repository API load, unload
# and swap models: the panel, and the switch to rebuilt TensorRT engines after boot, need it. "none" loads
# every model at start and allows no change.
APPLIANCE_MODEL_CONTROL_MODE ??= "explicit"
# Every request but liveness and readiness needs an API key.
APPLIANCE_AUTH ??= "true"
# REST and gRPC stay on loopback behind nginx's TLS on 443 (appliance-proxy; the ports, APPLIANCE_HTTP_PORT
# and APPLIANCE_GRPC_PORT, are appliance-paths'). "0.0.0.0" serves plaintext gRPC on every interface as well,
# which the firewall (appliance-firewall) then has to open.
APPLIANCE_GRPC_ADDRESS ??= "127.0.0.1"
# The local tritonserver (tritonserver.service).
APPLIANCE_TRITON_URL ??= "127.0.0.1:8101"
APPLIANCE_EXIT_TIMEOUT_SECS ??= "30"
# Keep in step with appliance-proxy's APPLIANCE_PROXY_MAX_BODY.
APPLIANCE_MAX_REQUEST_BYTES ??= "67108864"
APPLIANCE_LOG_LEVEL ??= "info"
# A/B updates: the record and the spool of POST /v2/update on the data partition; empty: updates are off.
APPLIANCE_UPDATE_DIR ??= "${@bb.utils.contains('DISTRO_FEATURES', 'appliance-update', '/data/update', '', d)}"

do_compile() {
    sed -e 's,@MODEL_REPOSITORY@,${APPLIANCE_MODEL_REPOSITORY},g' \
        -e 's,@KEYS_FILE@,${APPLIANCE_KEYS_FILE},g' \
        -e 's,@ADMIN_KEY_FILE@,${APPLIANCE_ADMIN_KEY_FILE},g' \
        -e 's,@STATEDIR@,${APPLIANCE_STATEDIR},g' \
        -e 's,@MODEL_CONTROL_MODE@,${APPLIANCE_MODEL_CONTROL_MODE},g' \
        -e 's,@AUTH@,${APPLIANCE_AUTH},g' \
        -e 's,@HTTP_PORT@,${APPLIANCE_HTTP_PORT},g' \
        -e 's,@GRPC_ADDRESS@,${APPLIANCE_GRPC_ADDRESS},g' \
        -e 's,@GRPC_PORT@,${APPLIANCE_GRPC_PORT},g' \
        -e 's,@TRITON_URL@,${APPLIANCE_TRITON_URL},g' \
        -e 's,@EXIT_TIMEOUT_SECS@,${APPLIANCE_EXIT_TIMEOUT_SECS},g' \
        -e 's,@MAX_REQUEST_BYTES@,${APPLIANCE_MAX_REQUEST_BYTES},g' \
        -e 's,@LOG_LEVEL@,${APPLIANCE_LOG_LEVEL},g' \
        -e 's,@UPDATE_DIR@,${APPLIANCE_UPDATE_DIR},g' \
        ${S}/appliance.toml.in > ${B}/appliance.toml
}

do_install() {
    install -Dm 0644 ${B}/appliance.toml ${D}${APPLIANCE_CONFIG}
}

CONFFILES:${PN} = "${APPLIANCE_CONFIG}"
