"""The field engineer's way in (recipes-core/users/engineer-access): the sudoers file passes the real ``visudo``,
and real ``sudo`` allows systemctl status/start/stop/restart and journalctl of the appliance's units and nothing
else; the real ``sshd`` reads the drop-in under a main file like oe-core's: keys only, and for engineer the data
partition's keys file too. Checking with sudo and sshd needs root (a private mount namespace); as another user those
tests are skipped and say why."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.image_files import PATHS, ROOT, assert_unchanged, in_private_mounts, render, tool, weak_defaults

RECIPE = ROOT / "recipes-core" / "users" / "engineer-access_1.0.bb"
UNITS = [
    "appliance",
    "appliance-autoscaler",
    "tritonserver",
    "appliance-engines",
    "nginx",
    "appliance-tls-cert",
    "swupdate",
]
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="checking with sudo and sshd needs a mount namespace (root)")


def variables() -> dict[str, str]:
    return {**weak_defaults(RECIPE), **PATHS}


def sudoers(tmp_path: Path, user: str = "engineer") -> Path:
    text = render(RECIPE, "sudoers-engineer.in", variables())
    if user != "engineer":
        text = re.sub(r"^engineer ", f"{user} ", text, flags=re.MULTILINE)
    path = tmp_path / "sudoers"
    path.write_text(text)
    path.chmod(0o440)
    return path


def test_visudo_accepts_the_sudoers_file(tmp_path: Path) -> None:
    result = subprocess.run([tool("visudo", "sudo"), "-cf", str(sudoers(tmp_path))], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


ALLOWED = [
    *(f"systemctl {verb} {unit}.service" for verb in ("status", "start", "stop", "restart") for unit in UNITS),
    "systemctl restart appliance",
    "systemctl --no-pager status tritonserver",
    *(f"journalctl -u {unit}.service" for unit in UNITS),
    "journalctl -u appliance -f",
    "journalctl -u appliance.service -b -n 200 --no-pager",
    "journalctl -u nginx --since today -o short-iso -p err",
    "journalctl -u swupdate --since 2026-01-31 --until -1h",
]
REFUSED = [
    "systemctl restart sshd.service",
    "systemctl edit appliance.service",
    "systemctl set-property appliance.service CPUQuota=1%",
    "systemctl restart appliance.service sshd.service",
    "systemctl start appliance-firewall.service",
    "systemctl daemon-reload",
    "systemctl",
    "journalctl",
    "journalctl -u sshd",
    "journalctl -u appliance -u sshd",
    "journalctl -u appliance --vacuum-size=1",
    "journalctl -u appliance --since 1 --vacuum-time 1",
    "journalctl -u appliance -D /etc",
    "journalctl -u appliance --file /etc/shadow",
    "journalctl -u appliance -o export --output-fields=MESSAGE",
    "sh -c id",
]


def sudo_allows(rules: Path, user: str, command: str) -> bool:
    """What real ``sudo -l -U USER COMMAND`` says with ``rules`` as /etc/sudoers (bound there in a private mount
    namespace: the host's own file is untouched)."""
    sudo = tool("sudo", "sudo")
    script = f"mount --bind {rules} /etc/sudoers && exec {sudo} -l -U {user} {command}"
    before = Path("/etc/sudoers").read_bytes()
    result = subprocess.run(in_private_mounts(script), capture_output=True, text=True, timeout=30)
    assert_unchanged(Path("/etc/sudoers"), before)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result.returncode == 0


@as_root
def test_sudo_allows_the_appliance_units_and_nothing_else(tmp_path: Path) -> None:
    # sudo -l -U needs a user that exists here: the rules are checked for "nobody" in place of "engineer".
    rules = sudoers(tmp_path, user="nobody")
    wrong = [c for c in ALLOWED if not sudo_allows(rules, "nobody", c)]
    wrong += [f"(allowed) {c}" for c in REFUSED if sudo_allows(rules, "nobody", c)]
    assert not wrong, wrong


# oe-core's sshd_config at the pinned wrynose commit (openssh_10.3p1), with DISTRO_FEATURES pam (UsePAM yes).
OE_CORE_SSHD_CONFIG = """\
Include {dropins}/*.conf
AuthorizedKeysFile\t.ssh/authorized_keys
KbdInteractiveAuthentication no
UsePAM yes
Compression no
ClientAliveInterval 15
ClientAliveCountMax 4
Subsystem\tsftp\t/usr/libexec/sftp-server
HostKey {hostkey}
"""


def sshd_settings(tmp_path: Path, user: str) -> dict[str, str]:
    dropins = tmp_path / "sshd_config.d"
    dropins.mkdir(exist_ok=True)
    (dropins / "50-engineer.conf").write_text(render(RECIPE, "sshd-engineer.conf.in", variables()))
    hostkey = tmp_path / "host_ed25519"
    if not hostkey.exists():
        subprocess.run(
            [tool("ssh-keygen", "openssh-client"), "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey)], check=True
        )
    main = tmp_path / "sshd_config"
    main.write_text(OE_CORE_SSHD_CONFIG.format(dropins=dropins, hostkey=hostkey))
    # sshd wants its privilege separation folder even to check a file: a tmpfs /run of its own.
    sshd = tool("sshd", "openssh-server")
    script = (
        f"mount -t tmpfs tmpfs /run && mkdir -m 0755 /run/sshd && {sshd} -t -f {main} && "
        f"exec {sshd} -T -f {main} -C user={user},host=client.example,addr=192.0.2.7"
    )
    run_dir = sorted(p.name for p in Path("/run").iterdir())
    result = subprocess.run(in_private_mounts(script), capture_output=True, text=True, timeout=30)
    assert sorted(p.name for p in Path("/run").iterdir()) == run_dir, "the tmpfs /run leaked out of its namespace"
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)


@as_root
def test_sshd_takes_keys_only_and_the_data_partition_keys_for_engineer(tmp_path: Path) -> None:
    data_keys = weak_defaults(RECIPE)["APPLIANCE_ENGINEER_DATA_KEYS"]
    assert data_keys == "/data/engineer/authorized_keys"
    engineer = sshd_settings(tmp_path, "engineer")
    assert engineer["authorizedkeysfile"] == f".ssh/authorized_keys {data_keys}"
    assert engineer["authenticationmethods"] == "publickey"
    other = sshd_settings(tmp_path, "somebody")
    assert other["authorizedkeysfile"] == ".ssh/authorized_keys"  # the Match block ends with the drop-in
    assert other["subsystem"] == "sftp /usr/libexec/sftp-server"
    for settings in (engineer, other):
        assert settings["passwordauthentication"] == "no"
        assert settings["kbdinteractiveauthentication"] == "no"
        assert settings["permitemptypasswords"] == "no"
        assert settings["permitrootlogin"] == "no"


def test_the_engineer_has_no_password_and_keys_come_from_the_build() -> None:
    text = RECIPE.read_text()
    assert "--password '*'" in text  # never matches a password; not sshd's "!" locked prefix
    assert 'APPLIANCE_ENGINEER_SSH_KEYS ??= ""' in text
    assert "${sysconfdir}/sudoers.d/engineer" in text and "install -m 0440" in text
