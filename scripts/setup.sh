#!/usr/bin/env bash
# Set up the Python environment in .venv on a fresh Debian 12 (or any Linux with Python 3.11+).
#   scripts/setup.sh            the appliance and its runtime dependencies
#   scripts/setup.sh test       plus what the test suite needs (pytest, the real tritonserver wheel, ruff, mypy,
#                               OpenTelemetry (the tracing extra), ...,
#                               and Debian's redis-server, which the Redis response cache tests start themselves,
#                               and swupdate, which checks the update bundles the update tests make,
#                               and nginx, nft, visudo/sudo and sshd, which check the image's configuration files,
#                               and systemd-journal-remote, which writes the journal files the Logs tests read)
# Installs Debian packages with apt-get when run as root on Debian and something is missing; Debian's
# Python refuses pip outside a virtual environment (PEP 668), so everything goes into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

need_apt=()
apt_pkgs=(python3-venv python3-dev build-essential)
if [ "$extras" = "test" ]; then
    apt_pkgs+=(chromium chromium-driver redis-server swupdate)
    # The image's nginx site, firewall ruleset, sudoers file and sshd drop-in are checked with the real tools
    # (tests/test_proxy_config.py, test_firewall.py, test_engineer_access.py); ping crosses the firewall test's
    # namespaces, and sudo resolves systemctl and journalctl from systemd.
    apt_pkgs+=(nginx nftables sudo openssh-server iputils-ping systemd)
    # The journal the panel's Logs page reads by unit: real journal files, written by systemd's own
    # journal-remote from entries the test makes, read by the real journalctl (tests/test_unit_logs.py).
    apt_pkgs+=(systemd-journal-remote)
fi
if command -v dpkg >/dev/null 2>&1; then
    for pkg in "${apt_pkgs[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
    done
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing ${need_apt[*]} with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    else
        echo "setup: missing Debian packages ${need_apt[*]} (run as root, or install them)" >&2
    fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if [ "$extras" = "test" ]; then
    .venv/bin/python -m pip install -q -e '.[test,triton,dev,tracing]'
else
    .venv/bin/python -m pip install -q -e .
fi
echo "setup: .venv ready ($(.venv/bin/python --version))"
