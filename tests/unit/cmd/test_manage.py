"""``instance-aware-manage``: output and exit codes, in-process on SQLite.

Operators script these commands, so what is asserted is what a script
sees: stdout, one-line errors on stderr, and 0 / 1 (database or config
unusable) / 2 (bad usage).  The same commands on PostgreSQL and MariaDB
are in ``tests/db/test_migrations.py``.
"""

from __future__ import annotations

import importlib.metadata
import pathlib
import subprocess
import sys
import uuid
from collections.abc import Callable

import pytest

from instance_aware.cmd import console, manage
from instance_aware.store import migration
from tests.local import serve as cli_main

HEAD = migration.head()


def _write_config(path: pathlib.Path, **options: object) -> str:
    lines = ['[instance_aware]'] + [f'{key} = {value}'
                                    for key, value in options.items()]
    path.write_text('\n'.join(lines) + '\n')
    return str(path)


@pytest.fixture
def database(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / 'state' / 'mapping.sqlite'


@pytest.fixture
def config_file(tmp_path: pathlib.Path, database: pathlib.Path) -> str:
    return _write_config(tmp_path / 'glance-api.conf',
                         connection=f'sqlite:///{database}')


def _one_line_error(err: str) -> str:
    """The single stderr line of a failed command, checked for shape."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith('instance-aware-manage: error: ')
    assert 'Traceback' not in err
    return lines[0]


def test_db_sync_twice_then_version(
        config_file: str, database: pathlib.Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    argv = ['--config-file', config_file, 'db']
    named = f'Database: sqlite:///{database} (configuration: {config_file})'
    assert manage.main([*argv, 'sync']) == 0
    assert capsys.readouterr() == (
        f'{named}\n'
        f'Creating the SQLite database file {database} ([instance_aware] '
        'connection names a file that does not exist yet).\n'
        f'Database schema upgraded from revision None to revision '
        f'{HEAD}.\n', '')
    assert database.is_file()
    assert manage.main([*argv, 'sync']) == 0
    assert capsys.readouterr() == (
        f'{named}\nDatabase schema already at revision {HEAD}.\n', '')
    assert manage.main([*argv, 'version']) == 0
    assert capsys.readouterr() == (
        f'Current revision: {HEAD}\nHead revision: {HEAD}\n', '')


def test_db_version_of_a_new_database_creates_nothing(
        config_file: str, database: pathlib.Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert manage.main(['--config-file', config_file, 'db', 'version']) == 0
    out, err = capsys.readouterr()
    assert out == f'Current revision: None\nHead revision: {HEAD}\n'
    assert "run 'instance-aware-manage db sync'" in err
    assert not database.parent.exists()


def test_db_sync_to_a_given_revision(
        config_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ['--config-file', config_file, 'db', 'sync', '--revision']
    assert manage.main([*argv, HEAD]) == 0
    assert capsys.readouterr().out.endswith(f'revision {HEAD}.\n')
    assert manage.main([*argv, 'no-such-revision']) == 1
    line = _one_line_error(capsys.readouterr().err)
    assert 'no-such-revision' in line


def test_default_connection_is_the_sqlite_file_in_state_path(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write_config(tmp_path / 'glance-api.conf',
                           state_path=tmp_path / 'glance')
    assert manage.main(['--config-file', config, 'db', 'sync']) == 0
    assert capsys.readouterr().out.endswith(f'revision {HEAD}.\n')
    assert (tmp_path / 'glance' / 'instance_aware.sqlite').is_file()


def test_generate_installation_uuid(
        capsys: pytest.CaptureFixture[str]) -> None:
    printed = []
    for _ in range(2):
        assert manage.main(['generate-installation-uuid']) == 0
        out, err = capsys.readouterr()
        value = uuid.UUID(out.strip())
        assert (out, value.version) == (f'{value}\n', 4)
        assert len(err.splitlines()) == 1
        assert 'X-Nova-Installation-UUID' in err
        assert 'Stock Nova sends neither' in err
        assert 'Nova sends it' not in err
        printed.append(value)
    assert printed[0] != printed[1]


@pytest.mark.parametrize('url', [
    pytest.param('postgresql+psycopg2://ia:s3cret@127.0.0.1:1/ia',
                 id='postgresql'),
    pytest.param('mysql+pymysql://ia:s3cret@127.0.0.1:1/ia', id='mysql'),
])
@pytest.mark.parametrize('command', [['sync'], ['version']],
                         ids=['sync', 'version'])
def test_unreachable_database_is_one_line_and_exit_1(
        url: str, command: list[str], tmp_path: pathlib.Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = _write_config(tmp_path / 'glance-api.conf', connection=url,
                           db_connect_timeout=1)
    assert manage.main(['--config-file', config, 'db', *command]) == 1
    out, err = capsys.readouterr()
    line = _one_line_error(err)
    shown = url.replace('s3cret', '***')
    assert out == ('' if command == ['version'] else
                   f'Database: {shown} (configuration: {config})\n')
    assert '127.0.0.1:1' in line
    assert 'refused' in line.lower()
    assert 's3cret' not in line


@pytest.mark.parametrize('options,expected', [
    pytest.param({'connection': 'not a url'}, 'not an SQLAlchemy URL',
                 id='connection'),
    pytest.param({'db_connect_timeout': 'soon'}, 'db_connect_timeout',
                 id='timeout'),
])
def test_bad_configuration_value_is_one_line_and_exit_1(
        options: dict[str, str], expected: str, tmp_path: pathlib.Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = _write_config(tmp_path / 'glance-api.conf', **options)
    assert manage.main(['--config-file', config, 'db', 'sync']) == 1
    assert expected in _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize('argv', [
    pytest.param([], id='no-command'),
    pytest.param(['frobnicate'], id='unknown-command'),
    pytest.param(['db'], id='no-action'),
    pytest.param(['db', 'drop'], id='unknown-action'),
    pytest.param(['db', 'sync', '--revision'], id='missing-value'),
    pytest.param(['db', 'version', 'extra'], id='extra-argument'),
])
def test_bad_usage_exits_2_with_usage(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert manage.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ''
    assert 'usage: instance-aware-manage' in err
    assert 'error:' in err


def test_missing_config_file_exits_2(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / 'nowhere.conf'
    assert manage.main(['--config-file', str(missing), 'db', 'sync']) == 2
    assert str(missing) in _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize('command', [
    pytest.param(['db', 'sync'], id='sync'),
    pytest.param(['db', 'version'], id='version'),
    pytest.param(['reconcile'], id='reconcile'),
    pytest.param(['adopt'], id='adopt'),
])
def test_no_configuration_file_is_refused(
        command: list[str], tmp_path: pathlib.Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """No file found: the command names what it looked for and creates
    nothing (not the default ``/var/lib/glance`` SQLite file)."""
    monkeypatch.setattr(console, 'default_config_files', lambda: [])
    monkeypatch.chdir(tmp_path)
    assert manage.main(command) == 1
    out, err = capsys.readouterr()
    line = _one_line_error(err)
    assert out == ''
    assert 'no configuration file found' in line
    assert '/etc/glance/' in line
    assert 'pass --config-file' in line
    assert list(tmp_path.iterdir()) == []


def test_glance_api_conf_is_the_default_configuration(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """oslo.config's search for ``glance-api.conf`` (here ``~/``) is what
    a Glance host has: its database is used and named."""
    monkeypatch.setenv('HOME', str(tmp_path))
    database = tmp_path / 'found.sqlite'
    config = _write_config(tmp_path / 'glance-api.conf',
                           connection=f'sqlite:///{database}')
    assert manage.main(['db', 'sync']) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (
        f'Database: sqlite:///{database} (configuration: {config})')
    assert database.is_file()


@pytest.mark.parametrize('main', [
    pytest.param(manage.main, id='manage'),
    pytest.param(cli_main.main, id='instance-aware'),
])
def test_version(main: Callable[[list[str]], int],
                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['--version']) == 0
    out = capsys.readouterr().out
    assert importlib.metadata.version('instance-aware') in out
    assert len(out.splitlines()) == 1


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert manage.main(['--help']) == 0
    out = capsys.readouterr().out
    assert 'db' in out
    assert 'generate-installation-uuid' in out


def test_console_script_is_main() -> None:
    (script,) = importlib.metadata.entry_points(
        group='console_scripts', name='instance-aware-manage')
    assert script.load() is manage.main


def test_real_process_exit_code_and_no_traceback(
        tmp_path: pathlib.Path) -> None:
    """What a shell sees: ``sys.exit(main())`` as the console script does."""
    config = _write_config(
        tmp_path / 'glance-api.conf', db_connect_timeout=1,
        connection='postgresql+psycopg2://ia@127.0.0.1:1/ia')
    result = subprocess.run(
        [sys.executable, '-c',
         'import sys; from instance_aware.cmd.manage import main; '
         'sys.exit(main())', '--config-file', config, 'db', 'sync'],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stdout == ('Database: postgresql+psycopg2://ia@127.0.0.1:1'
                             f'/ia (configuration: {config})\n')
    _one_line_error(result.stderr)
