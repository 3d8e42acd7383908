"""``appliance autoscale``: the autoscaler daemon (its own systemd unit, recipes-scaling/).

It reads the service's metrics and changes model instances through the admin API only:
:mod:`.signals` (what it reads), :mod:`.policy` (instances), :mod:`.power` (nvpmodel), :mod:`.config`
(autoscaler.toml), :mod:`.client` (the admin API), :mod:`.daemon` (the loop).
"""
