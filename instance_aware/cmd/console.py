"""What every console script shares: one-line errors, Glance's files.

Operators script these commands, so a failure is one line on stderr and
an exit code, never a traceback; and on a Glance host they need no flags,
because they read Glance API's own configuration files.
"""

from __future__ import annotations

from oslo_config import cfg

#: The operator's command; its name appears in the hints other commands
#: print (``run 'instance-aware-manage db sync'``).
MANAGE = 'instance-aware-manage'


class CommandError(Exception):
    """A failure reported to the operator as one line (exit code 1)."""


def default_config_files() -> list[str]:
    """Glance API's config files, then ours: the options live in the API's."""
    found = cfg.find_config_files(project='glance', prog='glance-api')
    own = cfg.find_config_files(project='glance', prog=MANAGE)
    return found + [path for path in own if path not in found]


def exit_code(exc: SystemExit) -> int:
    """argparse's exit (``--help``: 0, bad usage: 2) as a return code."""
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    return 2
