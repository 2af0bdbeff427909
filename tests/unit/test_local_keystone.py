"""The local Keystone's bootstrap command line, read by keystone-manage's
own parser: the generated password may start with ``-``."""

from __future__ import annotations

import pathlib
import warnings

import pytest
from oslo_config import cfg

from tests.local import keystone

with warnings.catch_warnings():
    # keystone-manage's modules import eventlet, which warns that it is
    # deprecated: Keystone's business, not this test's.
    warnings.simplefilter('ignore')
    from keystone.cmd import cli


def _bootstrap_args(tmp_path: pathlib.Path, secret: str,
                    monkeypatch: pytest.MonkeyPatch) -> list[str]:
    state = keystone.StateDir(str(tmp_path / 'keystone'))
    pathlib.Path(state.path).mkdir(parents=True)
    pathlib.Path(state.password_file).write_text(secret + '\n')
    for directory in (state.fernet_keys, state.credential_keys):
        pathlib.Path(directory).mkdir()
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(keystone, '_manage',
                        lambda _state, _python, *args, **_kw:
                        calls.append(args))
    keystone.bootstrap(state, 5000, 'python')
    (bootstrap,) = [call for call in calls if call[0] == 'bootstrap']
    return list(bootstrap)


@pytest.mark.parametrize('secret', ['-starts-with-a-dash', 'plain_Secret-1',
                                    '--looks-like-an-option'])
def test_keystone_manage_reads_the_password_it_was_given(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
        secret: str) -> None:
    args = _bootstrap_args(tmp_path, secret, monkeypatch)
    conf = cfg.ConfigOpts()
    conf.register_cli_opt(cli.command_opt)
    conf(args=args, project='keystone', default_config_files=[])
    assert conf.command.name == 'bootstrap'
    assert conf.command.bootstrap_password == secret
    assert conf.command.bootstrap_username == keystone.ADMIN
