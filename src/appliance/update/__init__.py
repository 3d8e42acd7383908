"""A/B updates of the appliance's root filesystem, with SWUpdate, and the health check that keeps or rolls back a slot.

- :mod:`.libconfig` reads ``sw-description`` (libconfig syntax, as SWUpdate does);
- :mod:`.bundle` reads a ``.swu`` (a cpio archive) and verifies it before anything is written: the signature of
  ``sw-description`` with the device's public key, the machine and hardware revision, every artefact's SHA-256,
  and that the archive is whole;
- :mod:`.slots` is the boot-slot interface (``nvbootctrl`` on a Jetson);
- :mod:`.confirm` decides, after a boot, whether the slot is kept (the service is ready with its models loaded) or
  rolled back, and keeps the record of updates on the data partition;
- :mod:`.apply` runs the installation (``swupdate``) into the other slot and records what is pending.
"""
