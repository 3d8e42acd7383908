# Where the appliance keeps its configuration and state, and the loopback ports it serves on: inherited by the
# recipes that render them (appliance, appliance-conf, appliance-proxy, appliance-engines, appliance-update-config).
# The service's state folder (appliance.service's StateDirectory=): keys, routes, audit log, models.
APPLIANCE_STATEDIR = "${localstatedir}/lib/appliance"
APPLIANCE_MODEL_REPOSITORY ??= "${APPLIANCE_STATEDIR}/models"
APPLIANCE_CONFIG ?= "${sysconfdir}/appliance/appliance.toml"
APPLIANCE_KEYS_FILE ?= "${APPLIANCE_STATEDIR}/keys.json"
# The admin key made at first boot (appliance-admin-key.service), readable by root only.
APPLIANCE_ADMIN_KEY_FILE ?= "${APPLIANCE_STATEDIR}/admin.key"
# REST and gRPC of appliance.service on loopback (nginx forwards 443 to both).
APPLIANCE_HTTP_PORT ??= "8000"
APPLIANCE_GRPC_PORT ??= "8001"
