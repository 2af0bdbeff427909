"""Whether Glance's imports may store other bytes than were staged.

``glance-direct`` stores the staged bytes as they are unless an import
plugin rewrites them (``image_conversion``, ``image_decompression``, a
deployer's own).  Glance reads the plugins from ``[image_import_opts]
image_import_plugins`` but registers that option only when a process runs
its first import: a worker that never ran one (another worker did, or the
service restarted since) cannot read it from the service's configuration
object.  The option is then read from the service's own configuration
files in a private :class:`~oslo_config.cfg.ConfigOpts`, the way Glance
will read it, so the answer never depends on what this process did before.

Only a positive answer counts: a staged digest is given up for the one
Glance computed at import when the configuration says a plugin rewrites
data, never because the plugins could not be read.
"""

from __future__ import annotations

from oslo_config import cfg, types
from oslo_log import log as logging

LOG = logging.getLogger(__name__)

GROUP = 'image_import_opts'
OPTION = 'image_import_plugins'
#: Glance import plugins known to store the staged bytes unchanged.
KEEPING = frozenset({'no_op', 'inject_image_metadata'})


def glance_option() -> cfg.ListOpt:
    """The option as Glance declares it (same type, same default)."""
    return cfg.ListOpt(OPTION, item_type=types.String(quotes=True),
                       bounds=True, default=[])


def _from_files(conf: cfg.ConfigOpts) -> list[str] | None:
    """The option read from the files ``conf`` was loaded from."""
    try:
        files = list(conf.config_file or ())
        dirs = list(conf.config_dir or ())
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        return None  # ``conf`` was never loaded from files
    private = cfg.ConfigOpts()
    private.register_opt(glance_option(), group=GROUP)
    try:
        private([], default_config_files=files, default_config_dirs=dirs)
        return list(private[GROUP][OPTION] or ())
    except (cfg.Error, OSError, ValueError) as exc:
        LOG.warning('[%s] %s could not be read from %s: %s', GROUP, OPTION,
                    ', '.join(files + dirs) or 'no file', exc)
        return None


def configured(conf: cfg.ConfigOpts) -> list[str] | None:
    """The import plugins the service's configuration enables, in order;
    ``None`` when they cannot be read."""
    try:
        return list(conf[GROUP][OPTION] or ())
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        return _from_files(conf)


def rewriting(conf: cfg.ConfigOpts,
              conversion_enabled: bool = False) -> list[str]:
    """The enabled import plugins that may rewrite image data.

    ``conversion_enabled`` is ``[instance_aware] image_conversion_enabled``,
    which says so for a registry whose configuration the stack cannot
    read (in front of a remote Glance).  Empty when nothing positively
    says a plugin rewrites data, unreadable configuration included.
    """
    plugins = configured(conf) or []
    found = [name for name in plugins if name not in KEEPING]
    if conversion_enabled and 'image_conversion' not in found:
        found.append('image_conversion')
    return found
