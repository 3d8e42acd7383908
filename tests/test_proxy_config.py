"""The image's nginx site (recipes-api/appliance-proxy), rendered as the recipe renders it: the real ``nginx -t``
accepts it, and a real nginx with it, in front of a real appliance server, serves KServe v2 gRPC (unary and the
stream) and REST with TLS on the "443" server, with the certificate the image's own appliance-tls-cert script makes,
and answers on the "80" server with nothing but a redirect to https. The test moves the listen ports to free ones
and points the upstreams at the test server (the recipe's APPLIANCE_HTTP_PORT and APPLIANCE_GRPC_PORT).

Debian 12's nginx is 1.22, older than the ``http2 on;`` directive (1.25.1; the image's nginx is 1.28): on such an
nginx the test turns it into the older ``listen ... http2`` form, which means the same, and says so in a warning."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.appliance import ServerProcess
from tests.support.image_files import PATHS, ROOT, render, tool, weak_defaults

RECIPE = ROOT / "recipes-api" / "appliance-proxy" / "appliance-proxy_1.0.bb"
CONF_RECIPE = ROOT / "recipes-api" / "appliance-conf" / "appliance-conf_1.0.bb"
SERIAL = "1421122012345"


def nginx() -> str:
    return tool("nginx", "nginx")


def nginx_version() -> tuple[int, ...]:
    out = subprocess.run([nginx(), "-v"], capture_output=True, text=True).stderr
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out)
    assert match, out
    return tuple(int(g) for g in match.groups())


def for_this_nginx(conf: str) -> str:
    if nginx_version() >= (1, 25, 1):
        return conf
    warnings.warn(
        f"nginx {'.'.join(map(str, nginx_version()))} predates 'http2 on;': checked as 'listen ... ssl http2'",
        stacklevel=2,
    )
    assert conf.count("    http2 on;\n") == 1
    conf = conf.replace("    http2 on;\n", "")
    return re.sub(r"(listen \S+ ssl);", r"\1 http2;", conf)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_certificate(folder: Path, hostname: str) -> Path:
    """The image's appliance-tls-cert script, rendered as the recipe does, with a device-tree serial number."""
    script = folder / "appliance-tls-cert"
    script.write_text(render(RECIPE, "appliance-tls-cert.sh.in", PATHS))
    serial = folder / "serial-number"
    serial.write_bytes(SERIAL.encode() + b"\0")  # NUL-terminated, as in /sys/firmware/devicetree/base
    env = {**os.environ, "APPLIANCE_SERIAL_NUMBER_FILE": str(serial)}
    result = subprocess.run(["sh", str(script), str(folder), hostname], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder / "device.crt"


def site(tls_dir: Path, **overrides: str) -> str:
    return render(
        RECIPE, "appliance-proxy.conf.in", {**weak_defaults(RECIPE), "APPLIANCE_TLS_DIR": str(tls_dir), **overrides}
    )


def main_conf(folder: Path, site_text: str) -> Path:
    """An nginx.conf around the site, as meta-webserver's includes conf.d/*.conf in its http block; every file
    nginx writes is under ``folder``."""
    (folder / "appliance-proxy.conf").write_text(site_text)
    temp = "\n".join(
        f"    {kind}_temp_path {folder}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = folder / "nginx.conf"
    conf.write_text(
        f"{user}daemon off;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log info;\n"
        f"events {{ worker_connections 256; }}\n"
        f"http {{\n    access_log {folder}/access.log;\n{temp}\n    include {folder}/appliance-proxy.conf;\n}}\n"
    )
    return conf


def test_the_recipe_and_appliance_conf_agree_on_the_ports() -> None:
    proxy, conf = weak_defaults(RECIPE), weak_defaults(CONF_RECIPE)
    for name in ("APPLIANCE_HTTP_PORT", "APPLIANCE_GRPC_PORT"):
        assert proxy[name] == conf[name], name
    assert conf["APPLIANCE_GRPC_ADDRESS"] == "127.0.0.1"  # gRPC only through nginx's TLS
    assert proxy["APPLIANCE_PROXY_MAX_BODY"] == "64m" and conf["APPLIANCE_MAX_REQUEST_BYTES"] == str(64 * 1024 * 1024)


def test_nginx_accepts_the_site_as_the_image_has_it(tmp_path: Path) -> None:
    make_certificate(tmp_path, "jetson-agx-orin-devkit")
    text = site(tmp_path)
    assert "grpc_pass grpc://appliance_grpc;" in text and "server 127.0.0.1:8001;" in text
    assert re.findall(r"listen (\S+)", text) == ["80", "[::]:80", "443", "[::]:443"]
    result = subprocess.run(
        [nginx(), "-t", "-c", str(main_conf(tmp_path, for_this_nginx(text)))], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_certificate_is_named_after_the_module(tmp_path: Path) -> None:
    cert = make_certificate(tmp_path, "jetson-agx-orin-devkit")
    out = subprocess.run(
        [tool("openssl", "openssl"), "x509", "-in", str(cert), "-noout", "-subject", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"CN = {SERIAL}" in out
    assert f"DNS:{SERIAL}, DNS:jetson-agx-orin-devkit" in out
    # No serial number (not a Jetson): the machine ID.
    other = tmp_path / "other"
    other.mkdir()
    (other / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    script = tmp_path / "appliance-tls-cert"
    env = {
        **os.environ,
        "APPLIANCE_SERIAL_NUMBER_FILE": str(other / "none"),
        "APPLIANCE_MACHINE_ID_FILE": str(other / "machine-id"),
    }
    subprocess.run(["sh", str(script), str(other), "devkit"], capture_output=True, env=env, check=True)
    out = subprocess.run(
        [tool("openssl", "openssl"), "x509", "-in", str(other / "device.crt"), "-noout", "-subject"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "CN = 0123456789abcdef0123456789abcdef" in out


@dataclass
class Proxy:
    https: int
    http: int
    cert: Path


@pytest.fixture
def proxy(demo_server: ServerProcess, tmp_path: Path) -> Iterator[Proxy]:
    cert = make_certificate(tmp_path, "localhost")
    https, http = free_port(), free_port()
    text = site(
        tmp_path, APPLIANCE_HTTP_PORT=str(demo_server.http_port), APPLIANCE_GRPC_PORT=str(demo_server.grpc_port)
    )
    text = text.replace("listen 443 ssl;", f"listen 127.0.0.1:{https} ssl;").replace("listen [::]:443 ssl;\n", "")
    text = text.replace("listen 80 default_server;", f"listen 127.0.0.1:{http} default_server;")
    text = text.replace("listen [::]:80 default_server;\n", "")
    conf = main_conf(tmp_path, for_this_nginx(text))
    process = subprocess.Popen([nginx(), "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", https), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, (tmp_path / "error.log").read_text()
                assert time.monotonic() < deadline, "nginx did not start listening"
                time.sleep(0.05)
        yield Proxy(https, http, cert)
    finally:
        process.terminate()
        process.wait(10)


def test_grpc_through_nginx_with_tls(proxy: Proxy, demo_server: ServerProcess) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"localhost:{proxy.https}", ssl=True, root_certificates=str(proxy.cert))
    assert client.is_server_ready()
    assert client.get_model_metadata("mlp").name == "mlp"
    data = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    request = grpcclient.InferInput("input", [2, 64], "FP32")
    request.set_data_from_numpy(data)
    through = client.infer("mlp", [request]).as_numpy("logits")
    direct = demo_server.grpc().infer("mlp", [request]).as_numpy("logits")
    assert through is not None and through.shape == (2, 10)
    np.testing.assert_array_equal(through, direct)

    # The bidirectional stream (its own location: no body limit over the whole stream).
    results: list[object] = []
    client.start_stream(callback=lambda result, error: results.append(error or result.as_numpy("logits")))
    for _ in range(3):
        client.async_stream_infer("mlp", [request])
    deadline = time.monotonic() + 30
    while len(results) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    client.stop_stream()
    assert len(results) == 3
    for result in results:
        assert isinstance(result, np.ndarray), result
        np.testing.assert_array_equal(result, direct)
    client.close()


def test_rest_through_nginx_and_port_80_only_redirects(proxy: Proxy) -> None:
    with httpx.Client(verify=ssl.create_default_context(cafile=str(proxy.cert))) as client:
        ready = client.get(f"https://localhost:{proxy.https}/v2/health/ready", timeout=30)
        assert ready.status_code == 200
        model = client.get(f"https://localhost:{proxy.https}/v2/models/mlp", timeout=30)
        assert model.status_code == 200 and model.json()["name"] == "mlp"
    plain = httpx.get(f"http://127.0.0.1:{proxy.http}/v2/models/mlp?x=1", timeout=30, follow_redirects=False)
    assert plain.status_code == 301
    assert plain.headers["location"] == "https://127.0.0.1/v2/models/mlp?x=1"
    # Nothing is served on port 80, whatever the path or method.
    posted = httpx.post(f"http://127.0.0.1:{proxy.http}/v2/models/mlp/infer", content=b"{}", timeout=30)
    assert posted.status_code == 301
