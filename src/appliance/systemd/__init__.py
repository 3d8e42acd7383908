"""What the service needs of systemd, without libsystemd: the notify protocol (:mod:`.notify`), the state of the
appliance's units (:mod:`.units`, from ``systemctl show``) and their journal (:mod:`.journal`, from
``journalctl``). Read-only: the service never starts or stops a unit."""
