"""``instance-aware-status upgrade check``: each check, and the exit code.

Run in-process on SQLite; the schema check on PostgreSQL and MariaDB is in
``tests/db/test_status.py``.
"""

from __future__ import annotations

import importlib.metadata
import json
import pathlib
import subprocess
import sys

import pytest

from instance_aware.cmd import manage, status
from instance_aware.store import migration

HEAD = migration.head()
BARBICAN = '[barbican]\nbarbican_endpoint = http://barbican.example:9311\n'


def _config(tmp_path: pathlib.Path, extra: str = BARBICAN,
            database: str | None = None) -> str:
    database = database or f'sqlite:///{tmp_path / "mapping.sqlite"}'
    path = tmp_path / 'glance-api.conf'
    path.write_text(f'[instance_aware]\nconnection = {database}\n{extra}',
                    encoding='utf-8')
    return str(path)


def _check(config: str, capsys: pytest.CaptureFixture[str]
           ) -> tuple[int, dict[str, tuple[int, str | None]]]:
    code = status.main(['--config-file', config, 'upgrade', 'check',
                        '--json'])
    out = json.loads(capsys.readouterr().out)
    assert out['name'] == 'instance-aware upgrade check results'
    return code, {c['check']: (c['result'], c['details'])
                  for c in out['checks']}


def _sync(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert manage.main(['--config-file', config, 'db', 'sync']) == 0
    capsys.readouterr()


def test_all_good_is_exit_0(tmp_path: pathlib.Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    _sync(config, capsys)
    code, checks = _check(config, capsys)
    assert code == 0
    assert checks == {
        'Database schema': (0, f'sqlite:///{tmp_path}/mapping.sqlite is at '
                               f'revision {HEAD}.'),
        'Policy file': (0, 'No policy file policy.yaml: the defaults '
                           'apply.'),
        'Key manager': (0, None),
    }


def test_schema_not_synced_is_a_failure_and_creates_nothing(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, checks = _check(_config(tmp_path), capsys)
    assert code == 2
    assert checks['Database schema'] == (
        2, f'sqlite:///{tmp_path}/mapping.sqlite is at revision None, the '
           f"package ships {HEAD}: run 'instance-aware-manage db sync'.")
    assert not (tmp_path / 'mapping.sqlite').exists()


def test_schema_behind_is_a_failure(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    assert manage.main(['--config-file', config, 'db', 'sync',
                        '--revision', '0001']) == 0
    capsys.readouterr()
    code, checks = _check(config, capsys)
    assert code == 2
    assert checks['Database schema'][1] is not None
    assert 'is at revision 0001' in checks['Database schema'][1]


def test_unreachable_database_is_a_failure_without_password(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(
        tmp_path, BARBICAN + '[instance_aware]\ndb_connect_timeout = 1\n',
        database='postgresql+psycopg2://ia:s3cret@127.0.0.1:1/ia')
    code, checks = _check(config, capsys)
    result, details = checks['Database schema']
    assert (code, result) == (2, 2)
    assert details is not None
    assert details.startswith('database postgresql+psycopg2://ia:***@'
                              '127.0.0.1:1/ia: ')
    assert 's3cret' not in details


def test_unknown_policy_rules_are_a_failure(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / 'policy.yaml'
    policy.write_text(
        '"instance_aware:get_instance_metadat": "role:admin"\n'
        '"instance_aware:get_image_location": "role:admin"\n'
        '"instance_aware:list_images": "role:admin"\n'
        '"get_image": ""\n', encoding='utf-8')
    config = _config(tmp_path, BARBICAN + f'[oslo_policy]\npolicy_file = '
                                          f'{policy}\n')
    _sync(config, capsys)
    code, checks = _check(config, capsys)
    assert code == 2
    assert checks['Policy file'] == (
        2, f'{policy} sets rules that do not exist (their defaults apply '
           'instead): instance_aware:get_instance_metadat, '
           'instance_aware:list_images.')


def test_known_policy_rules_succeed(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / 'policy.yaml'
    policy.write_text('"instance_aware:get_image_location": "role:admin"\n',
                      encoding='utf-8')
    config = _config(tmp_path, BARBICAN + f'[oslo_policy]\npolicy_file = '
                                          f'{policy}\n')
    _sync(config, capsys)
    assert _check(config, capsys) == (0, {
        'Database schema': (0, f'sqlite:///{tmp_path}/mapping.sqlite is at '
                               f'revision {HEAD}.'),
        'Policy file': (0, f'{policy}: every instance_aware: rule is '
                           'known.'),
        'Key manager': (0, None),
    })


@pytest.mark.parametrize('extra,expected', [
    pytest.param('', (1, 'Encrypted images will be refused: no key manager '
                         'is configured: neither [barbican] '
                         'barbican_endpoint nor [barbican] auth_endpoint is '
                         'set.  Configure the key manager as for Glance, or '
                         'set [instance_aware_keys] enabled = false.'),
                 id='missing'),
    pytest.param('[instance_aware_keys]\nenabled = false\n',
                 (0, 'The key lifecycle is off: encryption properties are '
                     'stored without checking their secrets.'),
                 id='disabled'),
    pytest.param('[barbican]\nauth_endpoint = http://ks.example/v3\n',
                 (0, None), id='catalog'),
])
def test_key_manager(tmp_path: pathlib.Path, extra: str,
                     expected: tuple[int, str | None],
                     capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, extra)
    _sync(config, capsys)
    code, checks = _check(config, capsys)
    assert (code, checks['Key manager']) == (expected[0], expected)


def test_table_output_and_version(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    _sync(config, capsys)
    assert status.main(['--config-file', config, 'upgrade', 'check']) == 0
    out = capsys.readouterr().out
    assert '| Check: Database schema' in out
    assert out.count('Result: Success') == 3
    assert status.main(['--version']) == 0
    assert capsys.readouterr().out.strip() == importlib.metadata.version(
        'instance-aware')


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert status.main(['upgrade']) == 2
    assert 'usage: instance-aware-status' in capsys.readouterr().err


def test_console_script(tmp_path: pathlib.Path) -> None:
    (script,) = importlib.metadata.entry_points(
        group='console_scripts', name='instance-aware-status')
    assert script.load() is status.main
    result = subprocess.run(
        [sys.executable, '-c', 'import sys; from instance_aware.cmd.status '
         'import main; sys.exit(main())', '--config-file', _config(tmp_path),
         'upgrade', 'check'],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert 'Result: Failure' in result.stdout
