SUMMARY = "SSH and limited sudo for the appliance's field engineers"
DESCRIPTION = "The engineer user: SSH with keys only (no password), keys built into the image \
and/or read from the data partition, and sudo for systemctl and journalctl on the appliance's \
units alone."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = " \
    file://sshd-engineer.conf.in \
    file://sudoers-engineer.in \
"

S = "${UNPACKDIR}"

inherit allarch useradd

# The engineer's public keys, built into ~engineer/.ssh/authorized_keys: one or more OpenSSH public key
# lines separated by ";" (e.g. "ssh-ed25519 AAAA... alice; ssh-ed25519 AAAA... bob"). Empty: none built in.
APPLIANCE_ENGINEER_SSH_KEYS ??= ""
# Keys put on the device's data partition (one device, or a fleet's provisioning): read at every login,
# so replacing the file rotates them. sshd reads it only when it and every folder above it are owned
# by root (or engineer) and writable by no one else.
APPLIANCE_ENGINEER_DATA_KEYS ??= "/data/engineer/authorized_keys"
ENGINEER_HOME = "/home/engineer"

# "*" as the password: no password can ever match it, and it is not the "!" prefix that sshd takes for a
# locked account (and then refuses even keys) when a product turns PAM off.
USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = " \
    --home-dir ${ENGINEER_HOME} --no-create-home --shell ${base_bindir}/sh --password '*' \
        --user-group --comment 'Field engineer' engineer \
"

do_compile() {
    sed -e 's,@DATA_KEYS@,${APPLIANCE_ENGINEER_DATA_KEYS},g' \
        ${S}/sshd-engineer.conf.in > ${B}/sshd-engineer.conf
    sed -e 's,@BASE_BINDIR@,${base_bindir},g' \
        ${S}/sudoers-engineer.in > ${B}/sudoers-engineer
}
do_compile[postfuncs] += "write_engineer_keys"

# Python, not shell: key lines may hold quotes (from="10.0.0.0/8" ...). Each must be a public key.
python write_engineer_keys() {
    import re
    keys = [k.strip() for k in (d.getVar("APPLIANCE_ENGINEER_SSH_KEYS") or "").split(";") if k.strip()]
    pattern = re.compile(r'(^|\s)(ssh-(ed25519|rsa)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/]+=*(\s|$)')
    for key in keys:
        if not pattern.search(key) or "PRIVATE KEY" in key:
            bb.fatal("APPLIANCE_ENGINEER_SSH_KEYS: not an OpenSSH public key line: %s..." % key[:40])
    with open(os.path.join(d.getVar("B"), "authorized_keys"), "w") as f:
        f.write("".join(key + "\n" for key in keys))
}

do_install() {
    install -Dm 0644 ${B}/sshd-engineer.conf ${D}${sysconfdir}/ssh/sshd_config.d/50-engineer.conf
    install -d -m 0750 ${D}${sysconfdir}/sudoers.d
    install -m 0440 ${B}/sudoers-engineer ${D}${sysconfdir}/sudoers.d/engineer
    install -d -m 0700 ${D}${ENGINEER_HOME}
    install -d -m 0700 ${D}${ENGINEER_HOME}/.ssh
    install -m 0600 ${B}/authorized_keys ${D}${ENGINEER_HOME}/.ssh/authorized_keys
    chown -R engineer:engineer ${D}${ENGINEER_HOME}
}

FILES:${PN} += "${ENGINEER_HOME}"

RDEPENDS:${PN} = " \
    openssh-sshd \
    sudo \
"
