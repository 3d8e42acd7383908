#
# SPDX-License-Identifier: MIT
#
# On-device checks of the ML Inference Appliance image (oeqa runtime), for what no host can show:
# the data partition, the firewall, the units under a real systemd, the device certificate.
# Run them on a flashed device with testimage (TEST_TARGET = "simpleremote", TEST_TARGET_IP,
# TEST_SUITES += "appliance_image appliance_update"); see docs/updates.md.

import json

from oeqa.core.decorator.depends import OETestDepends
from oeqa.runtime.case import OERuntimeTestCase
from oeqa.runtime.decorator.package import OEHasPackage


class ApplianceImageTest(OERuntimeTestCase):

    def run_ok(self, command):
        status, output = self.target.run(command)
        self.assertEqual(status, 0, "%s:\n%s" % (command, output))
        return output

    @OEHasPackage(['appliance'])
    def test_services_active(self):
        for unit in ('appliance.service', 'nginx.service', 'appliance-firewall.service',
                     'appliance-data-prepare.service', 'tritonserver.service'):
            self.assertEqual(self.run_ok('systemctl is-active %s' % unit).strip(), 'active', unit)
        self.run_ok('systemctl is-system-running --wait | grep -qx running || systemctl --failed --no-legend')

    @OEHasPackage(['appliance-data'])
    def test_data_partition_holds_the_state(self):
        self.assertIn('/data', self.run_ok('findmnt -n -o TARGET /data'))
        for target, source in (('/var/lib/appliance', '/data/appliance'), ('/etc/appliance', '/data/etc-appliance')):
            self.assertIn(source.split('/', 2)[2], self.run_ok('findmnt -n -o FSROOT %s' % target))
        state = json.loads(self.run_ok('cat /run/appliance-data.json'))
        self.assertIn(state['state'], ('ok', 'created', 'repaired'), state)

    @OEHasPackage(['appliance-firewall'])
    def test_only_443_and_22_are_reachable(self):
        self.run_ok('nft list table inet appliance')
        listening = self.run_ok("ss -Hltn | awk '{print $4}'")
        for port in (':8000', ':8001', ':8101', ':8102'):
            for line in listening.splitlines():
                if line.endswith(port):
                    self.assertTrue(line.startswith(('127.0.0.1', '[::1]')), 'exposed: %s' % line)

    @OEHasPackage(['appliance-proxy'])
    def test_device_certificate_names_the_module(self):
        serial = self.run_ok("tr -d '\\0' < /sys/firmware/devicetree/base/serial-number").strip()
        subject = self.run_ok('openssl x509 -noout -subject -in /etc/appliance/tls/device.crt')
        self.assertIn(serial, subject)

    @OETestDepends(['appliance_image.ApplianceImageTest.test_services_active'])
    def test_engineer_sudo_is_limited(self):
        self.run_ok('sudo -l -U engineer | grep -q "systemctl"')
        status, _ = self.target.run('su -s /bin/sh engineer -c "sudo -n /bin/sh -c true"')
        self.assertNotEqual(status, 0, 'engineer may run a shell as root')
