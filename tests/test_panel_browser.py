"""The admin panel in real Chromium against a real server with real models: log in, see every model and its
state, unload a model and load it again and see the state follow, the read-only view of a read key, and the
console free of errors (a CSP violation would show there). Screenshots of each page: tests/artifacts/panel/."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.core.auth.keys import split_key
from appliance.settings import APPLIANCE_UNITS
from tests.support.autoscaler import create_key
from tests.support.browser import chromium, screenshot
from tests.support.engines import fake_orin_root, write_engine
from tests.support.fake_jetson_sysfs import AGX_ORIN, write_fake_jetson
from tests.support.journal import write_journal


@pytest.fixture
def server(demo_repo: Path, server_factory: Any, tmp_path: Path) -> dict[str, Any]:
    """The demo models (mlp with a TensorRT engine manifest, for a FAKE AGX Orin) and a journal of the units."""
    repo = tmp_path / "repo"
    shutil.copytree(demo_repo, repo)
    write_engine(repo / "mlp" / "1")
    device = fake_orin_root(write_fake_jetson(tmp_path / "FAKE-agx-orin", AGX_ORIN))
    now = time.time()
    journal = write_journal(
        tmp_path / "FAKE-device-journal",
        [
            {"__REALTIME_TIMESTAMP": str(int((now - 60 + i) * 1e6)), "_SYSTEMD_UNIT": "nginx.service",
             "SYSLOG_IDENTIFIER": "nginx", "PRIORITY": str(priority), "MESSAGE": message}
            for i, (priority, message) in enumerate([(6, "start worker process 812"), (3, "upstream refused: mlp")])
        ],
    )  # fmt: skip
    keys = tmp_path / "keys.json"
    admin, read = create_key(keys, "admin"), create_key(keys, "read")
    served = server_factory(
        repo,
        *("--auth", "true", "--keys-file", str(keys), "--model-control-mode", "explicit", "--load-model", "*"),
        *("--device-root", str(device)),
        env={"APPLIANCE_JOURNAL_DIRECTORY": str(journal)},
    )
    return {"base": served.base, "admin": admin, "read": read}


def wait_for(driver: Any, condition: Any, timeout: float = 20) -> Any:
    """``condition`` until it holds; an element the page's refresh replaced meanwhile is looked up again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    waiting = WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException])
    return waiting.until(condition)


def log_in(driver: Any, base: str, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/admin")
    wait_for(driver, lambda d: d.current_url.endswith("/admin/login"))
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait_for(driver, lambda d: d.current_url.endswith("/admin"))


def states(driver: Any) -> dict[str, str]:
    """Each model's state as the table shows it (read in one go: the page refreshes the table)."""
    script = (
        "return Object.fromEntries([...document.querySelectorAll('#models tbody tr')]"
        ".map(r => [r.dataset.model, r.children[2].textContent]))"
    )
    result: dict[str, str] = driver.execute_script(script)
    return result


def click(driver: Any, css: str) -> None:
    """Click what ``css`` names, again if the page's refresh replaced it in between."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def clicked(d: Any) -> bool:
        try:
            d.find_element(By.CSS_SELECTOR, css).click()
            return True
        except StaleElementReferenceException:
            return False

    wait_for(driver, clicked)


def d_text(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    text: str = driver.find_element(By.ID, element_id).text
    return text


def console_errors(driver: Any) -> list[str]:
    try:
        return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    except Exception:  # noqa: BLE001 - a driver without the log: nothing to report
        return []


def test_log_in_see_the_models_unload_and_load(server: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    with chromium() as driver:
        driver.get(f"{server['base']}/admin")
        wait_for(driver, lambda d: d.current_url.endswith("/admin/login"))
        screenshot(driver, "login")
        log_in(driver, server["base"], server["admin"])
        wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, '[data-field="models"]').text == "2 of 2")
        assert driver.find_element(By.CSS_SELECTOR, '[data-field="health"]').text == "Ready"
        wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, '[data-field="uptime"]').text == "4 d 3 h")
        tiles = (
            "return Object.fromEntries([...document.querySelectorAll('[data-field]')]"
            ".map(n => [n.dataset.field, n.textContent]))"
        )
        shown = driver.execute_script(tiles)  # the FAKE AGX Orin's live figures
        assert (shown["power_mode"], shown["gpu_load"], shown["temperature_c"]) == ("MODE_50W", "45 %", "99.5")
        assert shown["memory"] == "14.3 GiB" and shown["board_power_w"] != "–"
        # the appliance's units, each with its state; where systemd does not run (this machine), the reason
        units = "return [...document.querySelectorAll('#units tbody tr')].map(r => r.dataset.unit)"
        wait_for(driver, lambda d: d.execute_script(units) == list(APPLIANCE_UNITS))
        if not Path("/run/systemd/system").is_dir():
            problem = driver.find_element(By.ID, "units-error")
            assert problem.is_displayed() and problem.text.startswith("systemd is not reachable: ")
        screenshot(driver, "overview")
        driver.execute_script("document.getElementById('h-units').scrollIntoView()")
        screenshot(driver, "overview-units")

        tensor = {"inputs": [{"name": "input", "shape": [3, 64], "datatype": "FP32", "data": [0.0] * 192}]}
        auth = {"Authorization": f"Bearer {server['admin']}"}
        assert httpx.post(f"{server['base']}/v2/models/mlp/infer", json=tensor, headers=auth).status_code == 200
        driver.find_element(By.LINK_TEXT, "Models").click()
        wait_for(driver, lambda d: states(d) == {"cnn": "READY", "mlp": "READY"})
        row = 'return [...document.querySelectorAll("#models tr[data-model=mlp] td")].map(td => td.textContent)'
        wait_for(driver, lambda d: d.execute_script(row)[4:8] == ["onnxruntime", "1", "3", "3.00"])
        # the engine's manifest, checked against this (FAKE) device
        engine = 'return [...document.querySelectorAll("#engines tr[data-model=mlp] td")].map(td => td.textContent)'
        wait_for(driver, lambda d: d.execute_script(engine)[-1:] == ["matches"])
        assert d_text(driver, "engines-device").startswith("This device: TensorRT 10.3.0, GPU Orin (nvgpu)")
        screenshot(driver, "models")
        # warm up: no confirmation (nothing changes); the status says how long each sample took
        click(driver, '#models tr[data-model="mlp"] button[data-action="Warm up"]')
        wait_for(driver, lambda d: "mlp version 1 warmed up: zeros ×1: mean " in d_text(d, "status"))
        wait_for(driver, lambda d: d.execute_script(row)[6] == "4")  # it ran as a request
        click(driver, '#models tr[data-model="mlp"] button[data-action="Unload"]')
        alert = wait_for(driver, lambda d: d.switch_to.alert)
        assert "Unload mlp?" in alert.text
        alert.accept()
        wait_for(driver, lambda d: states(d).get("mlp") == "UNAVAILABLE")
        assert "mlp unloaded" in driver.find_element(By.ID, "status").text
        screenshot(driver, "models-unloaded")
        click(driver, '#models tr[data-model="mlp"] button[data-action="Load"]')
        wait_for(driver, lambda d: d.switch_to.alert).accept()
        wait_for(driver, lambda d: states(d).get("mlp") == "READY")
        assert console_errors(driver) == []


def test_a_read_key_has_no_actions(server: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    with chromium() as driver:
        log_in(driver, server["base"], server["read"])
        assert "(read only)" in driver.find_element(By.CSS_SELECTOR, "header .who").text
        driver.find_element(By.LINK_TEXT, "Models").click()
        wait_for(driver, lambda d: states(d) == {"cnn": "READY", "mlp": "READY"})
        assert driver.find_elements(By.CSS_SELECTOR, "#models button") == []
        screenshot(driver, "models-read-only")


def test_a_tablet_sees_the_same_panel(server: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    with chromium(800, 1100) as driver:
        log_in(driver, server["base"], server["admin"])
        wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, '[data-field="models"]').text == "2 of 2")
        width = driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= 800, f"the overview is {width} px wide on an 800 px screen"
        screenshot(driver, "overview-tablet")


@pytest.fixture
def routes_server(server_factory: Any, tmp_path: Path) -> dict[str, Any]:
    from tests.support import models

    repo = tmp_path / "repo"
    models.write_arms(repo, "add", {1: models.add_model(1.0), 2: models.add_model(2.0)})
    keys = tmp_path / "keys.json"
    admin = create_key(keys, "admin")
    served = server_factory(
        repo, "--auth", "true", "--keys-file", str(keys), "--model-control-mode", "explicit", "--load-model", "*"
    )
    declared = httpx.put(
        f"{served.base}/v2/routes/ab",
        json={"arms": [{"model": "add", "version": "1", "weight": 100}, {"model": "add", "version": "2", "weight": 0}]},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert declared.status_code == 200, declared.text
    return {"base": served.base, "admin": admin}


def added(base: str, key: str, count: int) -> list[float]:
    """What a real client's requests to route 'ab' came back with: x + 1 from add:1, x + 2 from add:2."""
    import numpy as np
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(base.removeprefix("http://"))
    x = np.array([[1.0, 2.0]], np.float32)
    seen = []
    for _ in range(count):
        tensor = httpclient.InferInput("x", [1, 2], "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer("ab", [tensor], headers={"Authorization": f"Bearer {key}"})
        seen.append(float(result.as_numpy("y")[0][0] - x[0][0]))
    client.close()
    return seen


def test_change_a_routes_weights_then_run_and_roll_back_a_canary(routes_server: dict[str, Any]) -> None:
    import threading

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, admin = routes_server["base"], routes_server["admin"]
    assert set(added(base, admin, 10)) == {1.0}
    with chromium() as driver:
        log_in(driver, base, admin)
        driver.find_element(By.LINK_TEXT, "Routes").click()
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, 'section[data-route="ab"] input[data-index]'))
        screenshot(driver, "routes")
        inputs = driver.find_elements(By.CSS_SELECTOR, 'section[data-route="ab"] input[data-index]')
        for field, value in zip(inputs, ("0", "100")):
            field.clear()
            field.send_keys(value)
        click(driver, 'section[data-route="ab"] > button')
        wait_for(driver, lambda d: d.switch_to.alert).accept()
        wait_for(driver, lambda d: "ab: weights saved" in d.find_element(By.ID, "status").text)
        assert set(added(base, admin, 20)) == {2.0}  # the live mix follows: all of it to add:2

        # Back to add:1, then a canary of add:2 from the panel, advancing under real traffic, rolled back.
        httpx.put(
            f"{base}/v2/routes/ab",
            headers={"Authorization": f"Bearer {admin}"},
            json={
                "arms": [{"model": "add", "version": "1", "weight": 100}, {"model": "add", "version": "2", "weight": 0}]
            },
        )
        wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, 'section[data-route="ab"] select'))
        Select(driver.find_element(By.CSS_SELECTOR, 'section[data-route="ab"] select')).select_by_visible_text("add:2")
        step, least, ratio = driver.find_elements(By.CSS_SELECTOR, 'section[data-route="ab"] .canary-start input')
        # Sub-millisecond models on a busy machine: the p95 ratio is noise, so the threshold is loose here.
        for field, value in ((step, "5"), (least, "5"), (ratio, "50")):
            field.clear()
            field.send_keys(value)
        click(driver, 'section[data-route="ab"] .canary-start button')
        wait_for(driver, lambda d: d.switch_to.alert).accept()
        stop = threading.Event()
        traffic = threading.Thread(target=lambda: [added(base, admin, 5) for _ in iter(stop.is_set, True)])
        traffic.start()
        try:
            wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-decision="advance"]'), timeout=60)
            screenshot(driver, "routes-canary")
            click(driver, 'section[data-route="ab"] .actions button:nth-child(1)')  # Pause: the share holds
            wait_for(driver, lambda d: d.switch_to.alert).accept()
            wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, 'p.canary[data-status="paused"]'))
            click(driver, 'section[data-route="ab"] .actions button:nth-child(4)')  # Roll back
            wait_for(driver, lambda d: d.switch_to.alert).accept()
            wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, 'p.canary[data-status="rolled_back"]'))
        finally:
            stop.set()
            traffic.join()
        assert set(added(base, admin, 10)) == {1.0}  # rolled back: none of it to the canary
        assert console_errors(driver) == []


def test_timeline_logs_keys_and_the_support_bundle(server: dict[str, Any], tmp_path: Path) -> None:
    import tarfile

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, admin = server["base"], server["admin"]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    auth = {"Authorization": f"Bearer {admin}"}
    with chromium(downloads=downloads) as driver:
        log_in(driver, base, admin)

        # Logs: tailed live; what the service does next shows up without a reload.
        driver.find_element(By.LINK_TEXT, "Logs").click()
        wait_for(driver, lambda d: "appliance ready" in d.find_element(By.ID, "log-lines").text)
        assert httpx.post(f"{base}/v2/repository/models/mlp/unload", json={}, headers=auth).status_code == 200
        assert httpx.post(f"{base}/v2/repository/models/mlp/load", json={}, headers=auth).status_code == 200
        wait_for(driver, lambda d: "model 'mlp' unloaded" in d.find_element(By.ID, "log-lines").text)
        Select(driver.find_element(By.ID, "log-level")).select_by_value("ERROR")
        wait_for(driver, lambda d: "model 'mlp' unloaded" not in d.find_element(By.ID, "log-lines").text)
        # another unit's journal (the real journalctl, on journal files of the units)
        Select(driver.find_element(By.ID, "log-unit")).select_by_value("nginx.service")
        wait_for(driver, lambda d: d.find_element(By.ID, "log-lines").text.endswith("nginx: upstream refused: mlp"))
        Select(driver.find_element(By.ID, "log-level")).select_by_value("INFO")
        wait_for(driver, lambda d: "nginx: start worker process 812" in d.find_element(By.ID, "log-lines").text)
        screenshot(driver, "logs")

        # Timeline: the unload and the load of mlp, against its figures.
        driver.find_element(By.LINK_TEXT, "Timeline").click()
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, '#events tr[data-kind="unload"]'))
        assert "mlp" in driver.find_element(By.CSS_SELECTOR, '#events tr[data-kind="unload"]').text
        screenshot(driver, "timeline")

        # Keys: made (shown once) and revoked from the panel; both in the audit log.
        driver.find_element(By.LINK_TEXT, "Settings and keys").click()
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, '#keys tr[data-key="admin"]'))
        driver.find_element(By.ID, "key-name").send_keys("camera-7")
        driver.find_element(By.CSS_SELECTOR, "#key-create button").click()
        made = wait_for(driver, lambda d: d.find_element(By.ID, "key-made").text)
        new_key = made.split(": ", 1)[1].split(" ", 1)[0]
        assert new_key.startswith("apk_") and "not shown again" in made
        tensor = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}
        works = httpx.post(f"{base}/v2/models/mlp/infer", json=tensor, headers={"Authorization": f"Bearer {new_key}"})
        assert works.status_code == 200, works.text
        click(driver, '#keys tr[data-key="camera-7"] button')
        wait_for(driver, lambda d: d.switch_to.alert).accept()
        wait_for(driver, lambda d: "revoked" in d.find_element(By.CSS_SELECTOR, '#keys tr[data-key="camera-7"]').text)
        time.sleep(1.0)  # the server rereads the key file at most every half second
        refused = httpx.post(f"{base}/v2/models/mlp/infer", json=tensor, headers={"Authorization": f"Bearer {new_key}"})
        assert refused.status_code == 401
        wait_for(driver, lambda d: "key_revoke" in d.find_element(By.ID, "audit").text)
        screenshot(driver, "settings")

        # Support bundle: one click, and no secret in it.
        driver.find_element(By.LINK_TEXT, "Support").click()
        screenshot(driver, "support")
        driver.find_element(By.ID, "bundle").click()
        bundle = wait_for(driver, lambda d: next((p for p in downloads.glob("*.tar.gz")), None), timeout=30)
        with tarfile.open(bundle) as tar:
            names = tar.getnames()
            text = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())  # type: ignore[union-attr]
        assert "appliance-support/settings.json" in names and "appliance-support/logs/service.log" in names
        admin_secret = split_key(admin)
        assert admin_secret is not None
        for secret in (admin, server["read"], new_key, admin_secret[1]):
            assert secret.encode() not in text, "a key is in the support bundle"
        assert console_errors(driver) == []


def test_an_update_bundle_from_the_panel(demo_repo: Path, server_factory: Any, tmp_path: Path) -> None:
    """A signed bundle picked in the panel is verified by the service and queued; one signed by another key is
    refused with the reason, and nothing is queued."""
    import json

    from selenium.webdriver.common.by import By

    from tests.support.swu import MACHINE, make_bundle, make_signer

    ours, theirs = make_signer(tmp_path / "k", "appliance-update"), make_signer(tmp_path / "k", "someone-else")
    update_dir = tmp_path / "data" / "update"
    (update_dir / "spool").mkdir(parents=True)
    (update_dir / "boot.json").write_text(json.dumps({"slot": "a", "action": "keep", "message": "marked good"}))
    hwrevision = tmp_path / "hwrevision"
    hwrevision.write_text(f"{MACHINE} 1.0\n")
    keys = tmp_path / "keys.json"
    admin = create_key(keys, "admin")
    env = {"APPLIANCE_UPDATE_DIR": str(update_dir), "APPLIANCE_UPDATE_CERTIFICATE": str(ours.cert),
           "APPLIANCE_UPDATE_HWREVISION_FILE": str(hwrevision)}  # fmt: skip
    served = server_factory(demo_repo, "--auth", "true", "--keys-file", str(keys), env=env)
    rootfs = {"ml-inference-image.rootfs.tar.gz": b"rootfs" * 1000, "tegra-bl.cap": b"capsule" * 100}
    foreign = make_bundle(tmp_path / "foreign.swu", theirs, rootfs, version="9.9.9")
    good = make_bundle(tmp_path / "good.swu", ours, rootfs, version="4.2.0")
    with chromium() as driver:
        log_in(driver, served.base, admin)
        driver.find_element(By.LINK_TEXT, "Support").click()
        wait_for(driver, lambda d: "Running slot A" in d.find_element(By.ID, "update-state").text)
        for bundle, expect in ((foreign, "signature does not verify"), (good, "4.2.0: verified")):
            driver.find_element(By.ID, "update-file").send_keys(str(bundle))
            driver.find_element(By.CSS_SELECTOR, "#update-form button").click()
            wait_for(driver, lambda d: d.switch_to.alert).accept()
            wait_for(driver, lambda d, e=expect: e in d.find_element(By.ID, "status").text, timeout=60)
        assert sorted(p.name for p in (update_dir / "spool").iterdir()) == ["bundle.swu"]
        wait_for(driver, lambda d: "a bundle is queued" in d.find_element(By.ID, "update-state").text)
        screenshot(driver, "support-update")
        # The refused bundle's 400 is the one failed request the browser reports; no script error.
        assert [e for e in console_errors(driver) if "/v2/update - Failed to load resource" not in e] == []
