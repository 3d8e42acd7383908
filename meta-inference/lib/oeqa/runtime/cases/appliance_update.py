#
# SPDX-License-Identifier: MIT
#
# On-device A/B update checks (oeqa runtime), what only a Jetson with the redundant layout shows:
# a signed bundle installs into the other slot and the device comes back on it, confirmed; a
# bundle signed by another key is refused with the slots untouched; a slot that never gets
# healthy is rolled back by itself. Set APPLIANCE_TEST_UPDATE_BUNDLE to a .swu built by
# ml-inference-update (and APPLIANCE_TEST_FOREIGN_BUNDLE to one signed with another key).

import json
import os
import time

from oeqa.core.decorator.data import skipIfNotDataVar, skipIfNotFeature
from oeqa.runtime.case import OERuntimeTestCase
from oeqa.runtime.decorator.package import OEHasPackage


class ApplianceUpdateTest(OERuntimeTestCase):

    def run_ok(self, command, timeout=None):
        status, output = self.target.run(command, timeout=timeout)
        self.assertEqual(status, 0, "%s:\n%s" % (command, output))
        return output

    def slot(self):
        return self.run_ok('nvbootctrl get-current-slot').strip()

    def status(self):
        return json.loads(self.run_ok('appliance update status'))

    def reboot_and_wait(self, timeout=900):
        self.target.run('systemctl reboot', ignore_ssh_fails=True)
        time.sleep(30)
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, _ = self.target.run('systemctl is-system-running --wait', timeout=60, ignore_ssh_fails=True)
            if status in (0, 1):
                return
            time.sleep(10)
        self.fail('the device did not come back within %d s' % timeout)

    def push(self, variable):
        bundle = self.td.get(variable) or os.environ.get(variable)
        self.target.copyTo(bundle, '/data/update/test.swu')
        return '/data/update/test.swu'

    @skipIfNotFeature('appliance-update', 'A/B updates need the appliance-update distro feature')
    @OEHasPackage(['appliance-update-config'])
    def test_boot_was_confirmed(self):
        status = self.status()
        self.assertIsNone(status['pending'])
        this_boot = self.run_ok('cat /proc/sys/kernel/random/boot_id').strip()
        self.assertEqual(status['boot']['boot_id'], this_boot, 'appliance-update-confirm did not run at this boot')
        self.assertIn(status['boot']['action'], ('keep', 'confirm'), status['boot'])

    @skipIfNotDataVar('APPLIANCE_TEST_FOREIGN_BUNDLE', None, 'no bundle signed by another key given')
    def test_a_foreign_bundle_is_refused(self):
        before = self.slot()
        path = self.push('APPLIANCE_TEST_FOREIGN_BUNDLE')
        status, output = self.target.run('appliance update apply %s' % path)
        self.assertEqual(status, 2, output)
        self.assertIn('signature does not verify', output)
        self.assertIsNone(self.status()['pending'])
        self.assertEqual(self.slot(), before)

    @skipIfNotDataVar('APPLIANCE_TEST_UPDATE_BUNDLE', None, 'no update bundle given')
    def test_update_then_roll_back(self):
        before = self.slot()
        path = self.push('APPLIANCE_TEST_UPDATE_BUNDLE')
        self.run_ok('appliance update apply %s --remove' % path, timeout=3600)
        self.reboot_and_wait()
        self.assertNotEqual(self.slot(), before, 'the device did not boot the new slot')
        self.assertEqual(self.status()['history'][-1]['outcome'], 'confirmed')
        # Install again, and make the new slot unhealthy before it boots: the service cannot start there.
        updated = self.slot()
        path = self.push('APPLIANCE_TEST_UPDATE_BUNDLE')
        self.run_ok('appliance update apply %s --remove' % path, timeout=3600)
        other = 'APP' if updated == '1' else 'APP_b'
        self.run_ok('mkdir -p /mnt/other && mount /dev/disk/by-partlabel/%s /mnt/other' % other)
        self.run_ok('mkdir -p /mnt/other/etc/systemd/system/appliance.service.d /mnt/other/etc/systemd/system/appliance-update-confirm.service.d')
        self.run_ok("printf '[Service]\\nExecStartPre=/bin/false\\n' > /mnt/other/etc/systemd/system/appliance.service.d/broken.conf")
        self.run_ok("printf '[Service]\\nExecStart=\\nExecStart=/usr/bin/appliance update confirm --timeout-s 60\\n' "
                    "> /mnt/other/etc/systemd/system/appliance-update-confirm.service.d/short.conf")
        self.run_ok('umount /mnt/other')
        self.reboot_and_wait()   # boots the broken slot, which rolls back after 60 s and reboots
        deadline = time.time() + 1200
        while time.time() < deadline:
            status, output = self.target.run('nvbootctrl get-current-slot', timeout=60, ignore_ssh_fails=True)
            if status == 0 and output.strip() == updated and self.status()['pending'] is None:
                break
            time.sleep(20)
        self.assertEqual(self.slot(), updated, 'the unhealthy slot was not rolled back')
        self.assertEqual(self.status()['history'][-1]['outcome'], 'rolled-back')
