"""The configuration the image ships (recipes-api/appliance/files/appliance.toml.in), rendered as the recipe
renders it, is one the service accepts: an unknown key or a bad value there would stop appliance.service on every
device, and no build here runs the service."""

from __future__ import annotations

import re
from pathlib import Path

from appliance.settings import load_settings

TEMPLATE = Path(__file__).resolve().parents[1] / "recipes-api" / "appliance" / "files" / "appliance.toml.in"


def test_the_image_configuration_loads_with_auth_on(tmp_path: Path):
    state = tmp_path / "var-lib-appliance"
    values = {
        "MODEL_REPOSITORY": str(state / "models"),
        "KEYS_FILE": str(state / "keys.json"),
        "ADMIN_KEY_FILE": str(state / "admin.key"),
        "STATEDIR": str(state),
    }
    text = TEMPLATE.read_text()
    assert set(re.findall(r"@([A-Z_]+)@", text)) <= set(values), "a placeholder the recipe does not render"
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    config = tmp_path / "appliance.toml"
    config.write_text(text)

    settings = load_settings(config)
    assert settings.auth is True
    assert settings.keys_file == state / "keys.json"
    assert settings.audit_log_file == state / "audit.log"
    assert settings.model_repository == state / "models"
    assert settings.http_address == "127.0.0.1"  # REST only behind nginx's TLS
