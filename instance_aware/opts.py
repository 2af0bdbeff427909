"""Every option group, for ``oslo-config-generator`` and the docs.

The ``oslo.config.opts`` entry point ``instance_aware`` names
:func:`list_opts`.  This is the one module that imports every owner of a
group: the owners themselves (the filters' :mod:`instance_aware.config`,
the key lifecycle, the registry client, the proxy) never import each
other for their options.
"""

from __future__ import annotations

import copy

from oslo_config import cfg

from instance_aware import config
from instance_aware.cmd import glance as registry
from instance_aware.keys import opts as key_opts
from instance_aware.proxy import options as proxy_options


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """The four groups, as deep copies (the generator may change them):
    ``[instance_aware]``, ``[instance_aware_registry]`` (the Glance client
    of ``instance-aware-manage``), ``[instance_aware_keys]`` and
    ``[instance_aware_proxy]`` (the standalone service)."""
    return [(config.GROUP, copy.deepcopy(config.OPTS)),
            *registry.list_opts(), *key_opts.list_opts(),
            *proxy_options.list_opts()]
