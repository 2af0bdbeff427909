"""``reconcile``'s key part: skipped when not configured, and its exit code.

No Glance is needed: on an empty mapping database the reconcile part asks
Glance nothing, so its endpoint may be a closed port.  The
key rows are written directly, as a request that failed would leave them.
"""

from __future__ import annotations

import pathlib
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy import orm

from instance_aware.cmd import manage
from instance_aware.store import models
from tests.dbbackends import migrated_sqlite

SUMMARY = [
    '0 records checked against the registry',
    '0 pending records were activated',
    '0 pending records were discarded',
    '0 records of deleted images were marked deleted',
    '0 records of images given to another project were moved',
]


@pytest.fixture
def database(tmp_path: pathlib.Path) -> str:
    return migrated_sqlite(tmp_path)


def _config(tmp_path: pathlib.Path, database: str, keys: str = '') -> str:
    """An install-guide configuration: no ``[instance_aware_keys]``
    unless ``keys`` is given."""
    path = tmp_path / 'glance-api.conf'
    path.write_text(
        f'[instance_aware]\nconnection = {database}\n'
        '[instance_aware_registry]\nendpoint = http://127.0.0.1:9\n'
        f'trusted_headers = true\n{keys}', encoding='utf-8')
    return str(path)


def _failed_key(database: str) -> str:
    """A key whose release failed during the image's deletion (a
    deleted image: the reconcile part does not ask the registry)."""
    image_id = str(uuid.uuid4())
    engine = sa.create_engine(database)
    try:
        with orm.Session(engine) as session, session.begin():
            image = models.Image(registry_id='default', image_id=image_id,
                                 project_id='demo',
                                 state=models.DELETED)
            image.encryption_keys = [models.EncryptionKey(
                key_property='os_encrypt_key_id',
                key_id=str(uuid.uuid4()), deletion_policy='on_image_deletion',
                lifecycle_state='failed', attempts=1,
                last_error='on_deleted: key manager unreachable')]
            session.add(image)
    finally:
        engine.dispose()
    return image_id


def _run(config: str, capsys: pytest.CaptureFixture[str]
         ) -> tuple[int, list[str], str]:
    code = manage.main(['--config-file', config, 'reconcile'])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_keys_not_configured_are_skipped_with_a_summary(
        tmp_path: pathlib.Path, database: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(_config(tmp_path, database), capsys)
    assert (code, err) == (0, '')
    assert out[:-1] == SUMMARY
    assert out[-1].startswith(
        'Key operations not retried: [instance_aware_keys] is not '
        'configured (')
    assert 'auth_type' in out[-1]
    assert out[-1].endswith(
        '0 failed key operations waiting.  Set its service credentials, '
        'or enabled = false where no key manager is deployed.')


def test_keys_not_configured_while_some_wait_exits_1(
        tmp_path: pathlib.Path, database: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    _failed_key(database)
    _failed_key(database)
    code, out, err = _run(_config(tmp_path, database), capsys)
    assert code == 1
    assert out[:-1] == SUMMARY
    assert '2 failed key operations waiting' in out[-1]
    assert err == ('instance-aware-manage: error: 2 failed key operations '
                   'could not be retried\n')


def test_key_retries_that_fail_again_exit_1(
        tmp_path: pathlib.Path, database: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    image_id = _failed_key(database)
    keys = ('[instance_aware_keys]\nauth_mode = trusted_headers\n'
            'timeout = 2\n[barbican]\n'
            'barbican_endpoint = http://127.0.0.1:9\n')
    code, out, err = _run(_config(tmp_path, database, keys), capsys)
    assert code == 1
    assert out == [*SUMMARY, '1 failed key operations retried: '
                   '0 succeeded, 1 failed again, 0 waiting for their image']
    assert err == ('instance-aware-manage: error: 1 key operations failed '
                   'again (see the log)\n')
    engine = sa.create_engine(database)
    try:
        with orm.Session(engine) as session:
            row = session.scalars(
                sa.select(models.EncryptionKey).join(models.Image)
                .where(models.Image.image_id == image_id)).one()
            assert (row.lifecycle_state, row.attempts) == ('failed', 2)
    finally:
        engine.dispose()


def test_keys_disabled_print_no_key_line(
        tmp_path: pathlib.Path, database: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    _failed_key(database)
    config = _config(tmp_path, database,
                     '[instance_aware_keys]\nenabled = false\n')
    assert _run(config, capsys) == (0, SUMMARY, '')
