"""The configuration the image ships (recipes-api/appliance-conf/files/appliance.toml.in), rendered as the recipe
renders it, is one the service accepts: an unknown key or a bad value there would stop appliance.service on every
device, and no build here runs the service."""

from __future__ import annotations

import re
from pathlib import Path

from appliance.settings import load_settings
from tests.support.image_files import weak_defaults as image_weak_defaults

RECIPES = Path(__file__).resolve().parents[1] / "recipes-api"
TEMPLATE = RECIPES / "appliance-conf" / "files" / "appliance.toml.in"
RECIPE = RECIPES / "appliance-conf" / "appliance-conf_1.0.bb"


def weak_defaults() -> dict[str, str]:
    """The recipe's ``APPLIANCE_X ??= "v"`` defaults (its own and appliance-paths'), as placeholder -> value
    (``@X@`` -> v); UPDATE_DIR as the inference distro has it (the appliance-update feature on)."""
    found = {k.removeprefix("APPLIANCE_"): v for k, v in image_weak_defaults(RECIPE).items()}
    return {**found, "UPDATE_DIR": "/data/update"}


def test_the_image_configuration_loads_with_auth_on(tmp_path: Path):
    state = tmp_path / "var-lib-appliance"
    values = {
        **weak_defaults(),
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
    assert settings.grpc_address == "127.0.0.1"  # gRPC too: nginx serves it on 443
    # the weak defaults a product may change, as the recipe sets them
    assert (settings.http_port, settings.grpc_port, settings.triton_url) == (8000, 8001, "127.0.0.1:8101")
    assert settings.model_control_mode.value == "explicit" and settings.load_model == ["*"]
    assert settings.max_request_bytes == 64 * 1024 * 1024 and settings.update_dir == Path("/data/update")


def test_without_the_update_feature_updates_are_off(tmp_path: Path):
    """appliance-conf renders update_dir = "" when the distro has no appliance-update feature."""
    config = tmp_path / "appliance.toml"
    config.write_text(f'model_repository = "{tmp_path}"\nupdate_dir = ""\n')
    assert load_settings(config).update_dir is None
