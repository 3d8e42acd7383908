# Where the appliance keeps its configuration and state: inherited by the appliance and appliance-conf recipes.
# The service's state folder (appliance.service's StateDirectory=): keys, routes, audit log, models.
APPLIANCE_STATEDIR = "${localstatedir}/lib/appliance"
APPLIANCE_MODEL_REPOSITORY ??= "${APPLIANCE_STATEDIR}/models"
APPLIANCE_CONFIG ?= "${sysconfdir}/appliance/appliance.toml"
APPLIANCE_KEYS_FILE ?= "${APPLIANCE_STATEDIR}/keys.json"
# The admin key made at first boot (appliance-admin-key.service), readable by root only.
APPLIANCE_ADMIN_KEY_FILE ?= "${APPLIANCE_STATEDIR}/admin.key"
