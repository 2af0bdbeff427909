"""``instance-aware-status upgrade check``: is this deployment ready?

Run before restarting glance-api on a new release of the package, as
``nova-status`` and ``glance-status`` are (oslo.upgradecheck)::

    instance-aware-status [--config-file F ...] upgrade check [--json]

Checks:

``Database schema``
    The mapping database is at the newest revision shipped (otherwise:
    run ``instance-aware-manage db sync``).
``Policy file``
    Every rule of ``[oslo_policy] policy_file`` whose name starts with
    ``instance_aware:`` is one the package registers: a misspelt rule
    would be ignored and its default silently applied.
``Key manager``
    With the key lifecycle on (``[instance_aware_keys] enabled``), a key
    manager is configured: otherwise every encrypted image is refused (a
    warning: everything else works).

Exit codes (oslo.upgradecheck's): 0 all succeeded, 1 a warning, 2 a
failure, 255 the check itself crashed; 2 also for bad usage.
"""

from __future__ import annotations

import sys

from oslo_config import cfg
from oslo_policy import policy as oslo_policy
from oslo_upgradecheck import upgradecheck
from oslo_upgradecheck.upgradecheck import Code, Result

from instance_aware import config, policies, version
from instance_aware.cmd import console, db, glance, schema
from instance_aware.keys import lifecycle
from instance_aware.keys import opts as key_opts
from instance_aware.store import migration

PROG = 'instance-aware-status'
RULE_PREFIX = 'instance_aware:'


class Checks(upgradecheck.UpgradeCommands):
    """The upgrade checks of instance-aware, on one configuration."""

    display_title = 'instance-aware upgrade check results'

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf

    def _check_schema(self) -> Result:
        head = migration.head()
        try:
            _url, shown = db.connection(self.conf)
            current = schema.current(self.conf)
        except console.CommandError as exc:
            return Result(Code.FAILURE, str(exc))
        if current == head:
            return Result(Code.SUCCESS, f'{shown} is at revision {head}.')
        return Result(Code.FAILURE,
                      f'{shown} is at revision {current}, the package '
                      f"ships {head}: run '{console.MANAGE} db sync'.")

    def _check_policy_file(self) -> Result:
        oslo_policy.Enforcer(self.conf)  # registers [oslo_policy]
        name = self.conf.oslo_policy.policy_file
        path = self.conf.find_file(name)
        if path is None:
            return Result(Code.SUCCESS, f'No policy file {name}: the '
                                        'defaults apply.')
        try:
            with open(path, encoding='utf-8') as stream:
                rules = oslo_policy.parse_file_contents(stream.read())
        except (OSError, ValueError) as exc:
            return Result(Code.FAILURE, f'{path}: {exc}')
        known = {rule.name for rule in policies.list_rules()}
        unknown = sorted(rule for rule in rules
                         if rule.startswith(RULE_PREFIX)
                         and rule not in known)
        if unknown:
            return Result(Code.FAILURE,
                          f'{path} sets rules that do not exist (their '
                          f'defaults apply instead): {", ".join(unknown)}.')
        return Result(Code.SUCCESS, f'{path}: every {RULE_PREFIX} rule is '
                                    'known.')

    def _check_key_manager(self) -> Result:
        if not key_opts.KeyOptions.load(self.conf).enabled:
            return Result(Code.SUCCESS, 'The key lifecycle is off: '
                                        'encryption properties are stored '
                                        'without checking their secrets.')
        problem = lifecycle.configuration_problem(self.conf)
        if problem is not None:
            return Result(Code.WARNING,
                          f'Encrypted images will be refused: {problem}.  '
                          'Configure the key manager as for Glance, or set '
                          f'[{key_opts.GROUP}] enabled = false.')
        return Result(Code.SUCCESS, None)

    _upgrade_checks = (
        ('Database schema', _check_schema),
        ('Policy file', _check_policy_file),
        ('Key manager', _check_key_manager),
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the checks; returns the exit code.

    A fresh configuration per call (tests run it several times); the
    configuration files are Glance API's, as for ``instance-aware-manage``.
    """
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    glance.register_opts(conf)
    key_opts.register_opts(conf)
    checks = Checks(conf)
    upgradecheck.register_cli_options(conf, checks)
    try:
        conf(sys.argv[1:] if argv is None else argv, project='glance',
             prog=PROG, version=version.version_string(),
             default_config_files=console.default_config_files())
    except SystemExit as exc:
        return console.exit_code(exc)
    except cfg.Error as exc:
        print(f'{PROG}: error: {exc}', file=sys.stderr)
        return 2
    upgradecheck.CONF = conf  # where its --json is read
    return upgradecheck.run(conf)
