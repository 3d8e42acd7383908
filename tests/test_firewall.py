"""The image's firewall (recipes-core/firewall): the real ``nft`` checks the ruleset, loads it into a network
namespace of its own, and real packets from a second namespace find only SSH, HTTP and HTTPS open, over IPv4 and
IPv6 (whose neighbour discovery must get through), with everything else dropped rather than refused.

Network namespaces need root: as another user these tests are skipped, and say why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.image_files import PATHS, ROOT, render, tool

RECIPE = ROOT / "recipes-core" / "firewall" / "appliance-firewall_1.0.bb"
RULESET = RECIPE.parent / "files" / "appliance-firewall.nft"
OPEN_TCP = {22, 80, 443}
# What listens on the device but must not be reached from outside: the appliance (REST, gRPC), Triton.
CLOSED_TCP = [8000, 8001, 8100, 8101, 8102, 2222, 8443]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces (nft, ip netns) need root")


def nft() -> str:
    return tool("nft", "nftables")


def run(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


def loaded(*files: Path) -> list[dict[str, Any]]:
    """The ruleset the kernel holds after ``nft -f`` of each file in turn, in a fresh network namespace."""
    loads = " && ".join(f"{nft()} -f {f}" for f in files)
    out = run("unshare", "--net", "sh", "-c", f"{loads} && {nft()} -j list ruleset").stdout
    return list(json.loads(out)["nftables"])


def test_nft_checks_the_ruleset() -> None:
    run(nft(), "-c", "-f", str(RULESET))


def test_the_input_policy_drops_and_only_22_80_443_are_opened() -> None:
    items = loaded(RULESET)
    chains = {i["chain"]["name"]: i["chain"] for i in items if "chain" in i}
    assert {t["table"]["family"] + " " + t["table"]["name"] for t in items if "table" in t} == {"inet appliance"}
    assert (chains["input"]["hook"], chains["input"]["policy"]) == ("input", "drop")
    assert (chains["forward"]["hook"], chains["forward"]["policy"]) == ("forward", "drop")
    assert "output" not in chains  # what the device sends is not filtered

    tcp_ports: set[int] = set()
    udp_ports: set[int] = set()
    for rule in (i["rule"] for i in items if "rule" in i and i["rule"]["chain"] == "input"):
        if not any("accept" in e for e in rule["expr"]):
            continue
        for expr in rule["expr"]:
            left = expr.get("match", {}).get("left", {})
            payload = left.get("payload", {})
            if payload.get("field") != "dport":
                continue
            right = expr["match"]["right"]
            ports = set(right["set"]) if isinstance(right, dict) else {right}
            (tcp_ports if payload["protocol"] == "tcp" else udp_ports).update(ports)
    assert tcp_ports == OPEN_TCP
    assert udp_ports == {546}  # DHCPv6 replies only (from a link-local source port 547)


def test_loading_twice_keeps_one_table_and_leaves_others_alone(tmp_path: Path) -> None:
    other = tmp_path / "other.nft"
    other.write_text("table ip other { chain c { type filter hook input priority 10; policy accept; }; }\n")
    items = loaded(other, RULESET, RULESET)
    tables = sorted(t["table"]["family"] + " " + t["table"]["name"] for t in items if "table" in t)
    assert tables == ["inet appliance", "ip other"]
    assert sum(1 for i in items if "chain" in i and i["chain"]["table"] == "appliance") == 2


def test_the_unit_loads_the_installed_ruleset() -> None:
    unit = render(RECIPE, "appliance-firewall.service.in", PATHS)
    assert "ExecStart=/usr/sbin/nft -f /etc/nftables.conf" in unit
    assert "${sysconfdir}/nftables.conf" in RECIPE.read_text()
    assert "Before=network-pre.target" in unit
    assert not any(line.startswith("PrivateNetwork=") for line in unit.splitlines())  # it filters the host's


# -- real packets ---------------------------------------------------------------------------------------------------

LISTEN = textwrap.dedent(
    """
    import socket, sys, time
    socks = []
    for port in map(int, sys.argv[1:]):
        s = socket.socket(socket.AF_INET6)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port))
        s.listen(16)
        socks.append(s)
    print("listening", flush=True)
    time.sleep(120)
    """
)

CONNECT = textwrap.dedent(
    """
    import json, socket, sys
    result = {}
    for address in sys.argv[2:]:
        for port in map(int, sys.argv[1].split(",")):
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            s = socket.socket(family)
            s.settimeout(1.0)
            try:
                s.connect((address, port))
                outcome = "open"
            except socket.timeout:
                outcome = "dropped"
            except ConnectionRefusedError:
                outcome = "refused"
            finally:
                s.close()
            result[f"{address} {port}"] = outcome
    print(json.dumps(result))
    """
)


def inside(ns: str) -> list[str]:
    """Run a command in the named network namespace with nsenter: unlike ``ip netns exec`` (and ``ip -n``), it
    changes no mount, so it works where ``/`` is not a mount point (a chroot, a fresh root)."""
    return ["nsenter", f"--net=/run/netns/{ns}"]


@pytest.fixture
def device_and_client() -> Iterator[tuple[str, str]]:
    """Two network namespaces joined by a veth pair: the device (10.99.0.1, fd99::1) with the ruleset loaded,
    and a client (10.99.0.2, fd99::2). IPv6 addresses skip duplicate address detection, not neighbour discovery."""
    tag = uuid.uuid4().hex[:6]
    device, client = f"fwdev-{tag}", f"fwcli-{tag}"
    ip = tool("ip", "iproute2")
    run(ip, "netns", "add", device)
    try:
        run(ip, "netns", "add", client)
        try:
            run(*inside(device), ip, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", client)
            for ns, n in ((device, 1), (client, 2)):
                run(*inside(ns), ip, "link", "set", "lo", "up")
                run(*inside(ns), ip, "link", "set", "eth0", "up")
                run(*inside(ns), ip, "addr", "add", f"10.99.0.{n}/24", "dev", "eth0")
                run(*inside(ns), ip, "-6", "addr", "add", f"fd99::{n}/64", "dev", "eth0", "nodad")
            run(*inside(device), nft(), "-f", str(RULESET))
            yield device, client
        finally:
            run(ip, "netns", "del", client, check=False)
    finally:
        run(ip, "netns", "del", device, check=False)


def test_real_packets_reach_only_ssh_http_and_https(device_and_client: tuple[str, str]) -> None:
    device, client = device_and_client
    ports = sorted(OPEN_TCP) + CLOSED_TCP
    listener = subprocess.Popen(
        [*inside(device), sys.executable, "-c", LISTEN, *map(str, ports)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "listening"
        addresses = ["10.99.0.1", "fd99::1"]
        out = run(
            *inside(client),
            sys.executable,
            "-c",
            CONNECT,
            ",".join(map(str, ports)),
            *addresses,
            timeout=120,
        ).stdout
        outcome = json.loads(out)
        expected = {f"{a} {p}": "open" if p in OPEN_TCP else "dropped" for a in addresses for p in ports}
        assert outcome == expected
        # ICMP and ICMPv6 echo get through; so does the device's own traffic out, and its replies back.
        run(*inside(client), "ping", "-c", "1", "-W", "2", "10.99.0.1")
        run(*inside(client), "ping", "-6", "-c", "1", "-W", "2", "fd99::1")
        run(*inside(device), "ping", "-c", "1", "-W", "2", "10.99.0.2")
        run(*inside(device), "ping", "-6", "-c", "1", "-W", "2", "fd99::2")
    finally:
        listener.kill()
        listener.wait()
