"""``instance-aware-manage digests list`` on SQLite, in-process."""

from __future__ import annotations

import json
import pathlib

import pytest

from instance_aware.cmd import manage
from instance_aware.store import engine as ia_engine
from instance_aware.store import migration, models
from instance_aware.store.digests import Digests

UPLOADED = '11111111-1111-4111-8111-111111111111'
IMPORTED = '22222222-2222-4222-8222-222222222222'
STAGED = '33333333-3333-4333-8333-333333333333'
UNKNOWN = '44444444-4444-4444-8444-444444444444'


@pytest.fixture
def config_file(tmp_path: pathlib.Path) -> str:
    url = f'sqlite:///{tmp_path / "mapping.sqlite"}'
    engine = ia_engine.create_engine(url)
    try:
        migration.upgrade(engine)
        digests = Digests(ia_engine.Database(engine), 'default')
        digests.record(UPLOADED, algo='sha512', digest='a' * 128, size=10,
                       source=models.UPLOAD, fingerprint='f' * 64)
        digests.mark_verified(UPLOADED, 'a' * 128)
        digests.expect_import(IMPORTED)
        digests.record(STAGED, algo='sha512', digest='b' * 128, size=20,
                       source=models.STAGE, state=models.STAGED)
        digests.mark_tampered(STAGED, 'b' * 128)
        # Another registry's record is never listed.
        Digests(ia_engine.Database(engine), 'other').record(
            UNKNOWN, algo='sha512', digest='c' * 128, size=1,
            source=models.UPLOAD)
    finally:
        engine.dispose()
    path = tmp_path / 'glance-api.conf'
    path.write_text(f'[instance_aware]\nconnection = {url}\n')
    return str(path)


def _listed(config_file: str, capsys: pytest.CaptureFixture[str],
            *args: str) -> list[dict[str, object]]:
    assert manage.main(['--config-file', config_file, 'digests', 'list',
                        '--format', 'json', *args]) == 0
    out, err = capsys.readouterr()
    assert err == ''
    rows: list[dict[str, object]] = json.loads(out)
    return rows


def test_every_record_with_its_source_and_state(
        config_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _listed(config_file, capsys)
    assert [(row['image_id'], row['source'], row['state'])
            for row in rows] == [
        (UPLOADED, 'upload', 'recorded'), (IMPORTED, 'import', 'pending'),
        (STAGED, 'stage', 'tampered')]
    uploaded, imported, staged = rows
    assert uploaded['verified_at'] is not None
    assert (uploaded['size'], uploaded['fingerprint']) == (10, True)
    assert (imported['algo'], imported['size']) == (None, None)
    assert imported['meaning'] == "adopted from the registry's import"
    assert staged['tampered_at'] is not None


@pytest.mark.parametrize(('flags', 'expected'), [
    pytest.param(['--unverified'], [IMPORTED, STAGED], id='unverified'),
    pytest.param(['--tampered'], [STAGED], id='tampered'),
    pytest.param(['--unverified', '--tampered'], [STAGED], id='both'),
    pytest.param(['--image', STAGED, '--image', UPLOADED],
                 [UPLOADED, STAGED], id='images'),
])
def test_filters(config_file: str, capsys: pytest.CaptureFixture[str],
                 flags: list[str], expected: list[str]) -> None:
    rows = _listed(config_file, capsys, *flags)
    assert [row['image_id'] for row in rows] == expected


def test_image_without_a_record_is_source_none(
        config_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _listed(config_file, capsys, '--image', UPLOADED,
                   '--image', UNKNOWN)
    assert [(row['image_id'], row['source'], row['state'])
            for row in rows] == [(UPLOADED, 'upload', 'recorded'),
                                 (UNKNOWN, 'none', None)]
    assert rows[1]['meaning'] == (
        'not seen by the stack: downloads not checked')


def test_table(config_file: str,
               capsys: pytest.CaptureFixture[str]) -> None:
    assert manage.main(['--config-file', config_file, 'digests', 'list',
                        '--tampered']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ['IMAGE', 'SOURCE', 'STATE', 'ALGO', 'SIZE',
                                'RECORDED', 'VERIFIED', 'TAMPERED']
    cells = lines[1].split()
    assert cells[:5] == [STAGED, 'stage', 'tampered', 'sha512', '20']
    assert cells[6] == '-' and cells[7].endswith('Z')
    assert len(lines) == 2


def test_database_unusable_is_one_line(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / 'bad.conf'
    path.write_text('[instance_aware]\nconnection = '
                    'postgresql+psycopg2://ia@127.0.0.1:1/ia\n'
                    'db_connect_timeout = 1\n')
    assert manage.main(['--config-file', str(path), 'digests',
                        'list']) == 1
    err = capsys.readouterr().err
    assert err.startswith('instance-aware-manage: error: database ')
    assert len(err.splitlines()) == 1
