"""The records of captured properties on SQLite, PostgreSQL and MariaDB.

The write protocol (pending, then active or removed; history on delete),
the indexed questions (list filters, the query API) and the reconcile
helpers, each asserted on what the store answers afterwards.
"""

from __future__ import annotations

import datetime
import pathlib
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from instance_aware.store import engine as ia_engine
from instance_aware.store import errors, models
from instance_aware.store.records import Records, RelationFields

pytestmark = pytest.mark.database

INSTANCE = str(uuid.UUID(int=7, version=4))
T0 = datetime.datetime(2026, 1, 1, 12, 0, 0)


@pytest.fixture
def records(migrated_engine: sa.Engine) -> Records:
    return Records(ia_engine.Database(migrated_engine), 'r1')


def _relation(image_type: str, backup_type: str | None = None,
              instance: str = INSTANCE,
              trusted: bool = True) -> RelationFields:
    return RelationFields(instance, None, image_type, backup_type, trusted,
                          'nova')


def _image(records: Records, project: str, image_type: str,
           backup_type: str | None, minutes: int,
           instance: str = INSTANCE) -> str:
    """An active image created ``minutes`` after T0."""
    image_id = str(uuid.uuid4())
    values = {'instance_uuid': instance, 'image_type': image_type}
    if backup_type:
        values['backup_type'] = backup_type
    records.begin(image_id, project, models.INSTANCE, values,
                  _relation(image_type, backup_type, instance))
    records.commit(image_id, models.INSTANCE, project,
                   T0 + datetime.timedelta(minutes=minutes))
    return image_id


def test_pending_then_commit_or_abort(records: Records) -> None:
    kept, refused = str(uuid.uuid4()), str(uuid.uuid4())
    for image_id in (kept, refused):
        records.begin(image_id, 'p', models.INSTANCE,
                      {'image_type': 'snapshot'}, _relation('snapshot'))
    assert records.get(kept, models.INSTANCE).state == models.PENDING
    assert records.load([kept], models.INSTANCE) == {}  # not yet visible
    # ... to filters; an image the registry already returns has its keys.
    assert records.values_of([kept]) == {
        kept: {models.INSTANCE: {'image_type': 'snapshot'}}}
    records.commit(kept, models.INSTANCE, 'p', T0)
    records.abort(refused, models.INSTANCE)
    stored = records.get(kept, models.INSTANCE)
    assert (stored.state, stored.values, stored.image_created_at) == (
        models.ACTIVE, {'image_type': 'snapshot'}, T0)
    assert records.get(refused, models.INSTANCE) is None
    with pytest.raises(errors.Conflict):
        records.begin(kept, 'p', models.INSTANCE, {'image_type': 'x'})


def test_two_concerns_share_one_row(records: Records) -> None:
    image_id = str(uuid.uuid4())
    records.begin(image_id, 'p', models.ENCRYPTION,
                  {'os_encrypt_format': 'luks'})
    records.begin(image_id, 'p', models.INSTANCE, {'image_type': 'backup'},
                  _relation('backup'), joining=True)
    records.commit(image_id, models.INSTANCE, 'p', T0)
    assert records.values_of([image_id]) == {image_id: {
        models.ENCRYPTION: {'os_encrypt_format': 'luks'},
        models.INSTANCE: {'image_type': 'backup'}}}


def test_rotation_match_is_indexed_ordered_and_scoped(
        records: Records) -> None:
    daily = [_image(records, 'p', 'backup', 'daily', m) for m in (1, 3, 2)]
    _image(records, 'p', 'backup', 'weekly', 4)
    _image(records, 'p', 'snapshot', None, 5)
    _image(records, 'other', 'backup', 'daily', 6)
    _image(records, 'p', 'backup', 'daily', 7, instance=str(uuid.uuid4()))
    wanted = {'instance_uuid': INSTANCE, 'image_type': 'backup',
              'backup_type': 'daily'}
    newest_first = [daily[1], daily[2], daily[0]]
    assert [m[0] for m in records.matching(wanted, ['p'])] == newest_first
    assert [m[0] for m in records.matching(wanted, ['p'], False)] == (
        newest_first[::-1])
    assert len(records.matching(wanted, None)) == 4  # every project
    assert records.matching(wanted, []) == []


def test_long_values_match_exactly(records: Records) -> None:
    long_a = 'a' * 300
    long_b = 'a' * 255 + 'b' * 45  # same indexed prefix
    for value in (long_a, long_b):
        image_id = str(uuid.uuid4())
        records.begin(image_id, 'p', models.INSTANCE, {'boot_roles': value})
        records.commit(image_id, models.INSTANCE, 'p', T0)
    found = records.matching({'boot_roles': long_b}, ['p'])
    assert len(found) == 1
    assert records.get(found[0][0], models.INSTANCE).values == {
        'boot_roles': long_b}


def test_query_api_pages_newest_first_with_history(records: Records) -> None:
    ids = [_image(records, 'p', 'backup', 'daily', m) for m in range(5)]
    assert records.mark_deleted(ids[4])
    page = records.of_instance(INSTANCE, ['p'], image_type='backup',
                               limit=2)
    assert [r.image_id for r in page] == [ids[3], ids[2]]
    rest = records.of_instance(INSTANCE, ['p'], limit=10,
                               marker=ids[2])
    assert [r.image_id for r in rest] == [ids[1], ids[0]]
    history = records.of_instance(INSTANCE, ['p'], include_deleted=True)
    assert [r.image_id for r in history] == [ids[4], *ids[3::-1]]
    assert history[0].state == models.DELETED
    assert history[0].deleted_at is not None
    # Each entry is the image's whole relation, as one image's read has it.
    assert history == [records.related(r.image_id) for r in history]
    assert all(r.properties['instance_uuid'] == INSTANCE
               and r.relation.instance_uuid == INSTANCE for r in history)
    assert records.of_instance(INSTANCE, ['someone-else']) == []
    with pytest.raises(LookupError):
        records.of_instance(INSTANCE, ['p'], marker=str(uuid.uuid4()))


def test_replace_move_and_reconcile_helpers(records: Records) -> None:
    image_id = _image(records, 'p', 'backup', 'daily', 0)
    records.replace(image_id, models.INSTANCE, 'p',
                    {'instance_uuid': INSTANCE, 'image_type': 'snapshot'},
                    _relation('snapshot'), None)
    assert records.get(image_id, models.INSTANCE).values == {
        'instance_uuid': INSTANCE, 'image_type': 'snapshot'}
    records.move(image_id, 'q')
    assert records.related(image_id).project_id == 'q'
    assert records.matching({'image_type': 'snapshot'}, ['p']) == []
    crashed = str(uuid.uuid4())
    records.begin(crashed, 'q', models.INSTANCE, {'image_type': 'x'})
    later = models.utcnow() + datetime.timedelta(seconds=1)
    assert records.pending(later) == [crashed]
    records.settle_pending(crashed, True, 'q', T0)
    assert records.get(crashed, models.INSTANCE).state == models.ACTIVE
    assert records.count(models.ACTIVE) == 2
    assert list(records.active_batches(1)) == [{image_id: 'q'}, {crashed: 'q'}]


def test_an_update_after_a_concurrent_delete_keeps_the_history(
        records: Records) -> None:
    """PATCH answered by the registry, DELETE finished, then our write:
    the row stays deleted (the registry never brings an id back)."""
    image_id = _image(records, 'p', 'backup', 'daily', 0)
    assert records.mark_deleted(image_id)
    deleted_at = records.get(image_id, models.INSTANCE).deleted_at
    records.replace(image_id, models.INSTANCE, 'p',
                    {'instance_uuid': INSTANCE, 'image_type': 'backup',
                     'backup_type': 'weekly'},
                    _relation('backup', 'weekly'), None)
    stored = records.get(image_id, models.INSTANCE)
    assert (stored.state, stored.deleted_at) == (models.DELETED, deleted_at)
    assert stored.values['backup_type'] == 'weekly'
    assert records.matching({'instance_uuid': INSTANCE}, ['p']) == []
    # Given back only if the registry still returns the image.
    assert records.values_of([image_id])[image_id][models.INSTANCE] == (
        stored.values)


def test_relation_driven_match_equals_the_general_one(
        records: Records, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nova's filters are answered from ``ia_relations``; the answers are
    exactly those of the property index, UUID spellings included."""
    from instance_aware.store import search
    lower = 'abcdef12-3456-4789-8abc-def012345678'
    other = str(uuid.UUID(int=8, version=4))
    install = str(uuid.UUID(int=9, version=4))
    images = {
        'daily': _image(records, 'p', 'backup', 'daily', 1, lower),
        'weekly': _image(records, 'p', 'backup', 'weekly', 2, lower),
        'snapshot': _image(records, 'p', 'snapshot', None, 3, lower),
        'elsewhere': _image(records, 'q', 'backup', 'daily', 4, lower),
        'other': _image(records, 'p', 'backup', 'daily', 5, other),
    }
    # The same instance spelled in upper case, with an installation.
    upper = str(uuid.uuid4())
    records.begin(upper, 'p', models.INSTANCE,
                  {'instance_uuid': lower.upper(), 'image_type': 'backup',
                   'backup_type': 'daily',
                   'nova_installation_uuid': install},
                  RelationFields(lower, install, 'backup', 'daily', True,
                                 'nova'))
    records.commit(upper, models.INSTANCE, 'p', T0)
    questions = [
        {'instance_uuid': lower},
        {'instance_uuid': lower, 'image_type': 'backup'},
        {'instance_uuid': lower, 'image_type': 'backup',
         'backup_type': 'daily'},
        {'instance_uuid': lower.upper(), 'image_type': 'backup'},
        {'instance_uuid': lower, 'nova_installation_uuid': install},
        {'instance_uuid': lower.upper(),
         'nova_installation_uuid': install},
        {'instance_uuid': other, 'backup_type': 'daily'},
        {'instance_uuid': lower, 'image_type': 'snapshot'},
    ]
    scopes: list[list[str] | None] = [['p'], ['p', 'q'], None, []]

    def answers() -> list[Any]:
        # Without and with the values read along (one statement on the
        # relation side, a second one on the general side).
        result: list[Any] = []
        for q in questions:
            for scope in scopes:
                for descending in (True, False):
                    values: dict[str, Any] = {}
                    result.append((records.matching(q, scope, descending),
                                   records.matching(q, scope, descending,
                                                    values),
                                   values))
        return result

    relation_answers = answers()
    assert any(values for _plain, _with, values in relation_answers)
    for plain, with_values, values in relation_answers:
        assert plain == with_values
        assert values == (records.values_of([i for i, _ in plain])
                          if plain else {})
    monkeypatch.setattr(search, 'by_relation', lambda f: False)
    general_answers = answers()
    assert relation_answers == general_answers
    monkeypatch.undo()
    found = [i for i, _ in records.matching(questions[2], ['p'])]
    upper_found = [i for i, _ in records.matching(questions[3], ['p'])]
    if records.db.engine.dialect.name in ('mysql', 'mariadb'):
        # Case-insensitive collation: both spellings are one value, as in
        # Glance's own MySQL database.
        assert found == [images['daily'], upper]
        assert upper_found == [images['weekly'], images['daily'], upper]
        return
    # Elsewhere the canonical spelling never finds the upper-case one, and
    # the upper-case spelling finds only it.
    assert found == [images['daily']]
    assert upper_found == [upper]
    assert records.matching(questions[4], ['p']) == []
    assert [i for i, _ in records.matching(questions[5], None)] == [upper]


def test_matching_reads_the_values_of_its_matches_along(
        records: Records) -> None:
    daily = _image(records, 'p', 'backup', 'daily', 1)
    records.replace(daily, models.ENCRYPTION, 'p',
                    {'os_encrypt_format': 'luks'}, None, None)
    weekly = _image(records, 'p', 'backup', 'weekly', 2)
    for filters in ({'instance_uuid': INSTANCE, 'backup_type': 'daily'},
                    {'image_type': 'backup', 'backup_type': 'daily'}):
        values: dict[str, dict[str, dict[str, str]]] = {}
        assert [i for i, _ in records.matching(filters, ['p'],
                                               values=values)] == [daily]
        assert values == records.values_of([daily])
        assert values[daily][models.ENCRYPTION] == {
            'os_encrypt_format': 'luks'}
        assert weekly not in values
    nothing: dict[str, dict[str, dict[str, str]]] = {}
    assert records.matching({'instance_uuid': INSTANCE,
                             'backup_type': 'monthly'}, ['p'],
                            values=nothing) == []
    assert nothing == {}


@pytest.mark.parametrize('builder', ['relation_statement',
                                     'relation_values_statement'])
def test_sqlite_drives_relation_matches_by_the_relation_index(
        tmp_path: pathlib.Path, builder: str) -> None:
    """SQLite keeps no value statistics: left to choose, it walks the
    project index (most of the table) instead of the relation index."""
    from instance_aware.store import matching, migration
    engine = ia_engine.create_engine(f'sqlite:///{tmp_path}/plan.sqlite')
    migration.upgrade(engine)
    names = ('backup_type', 'image_type', 'instance_uuid')
    statement = getattr(matching, builder)(names, True, True)
    compiled = statement.compile(dialect=engine.dialect)
    values = {**compiled.params, 'registry_id': 'r1',
              'relation_instance_uuid': INSTANCE,
              'relation_image_type': 'backup',
              'relation_backup_type': 'daily', 'projects': 'p'}
    sql = compiled.string.replace('__[POSTCOMPILE_projects]', '(?)')
    with engine.connect() as connection:
        plan = connection.exec_driver_sql(
            'EXPLAIN QUERY PLAN ' + sql,
            tuple(values[key] for key in compiled.positiontup or ())).all()
    engine.dispose()
    details = ' / '.join(row[3] for row in plan)
    # The images are then looked up by row id, never walked by project,
    # and their properties by image.
    assert 'ix_ia_relations_instance' in details, details
    assert 'SCAN' not in details.replace('SCAN CONSTANT ROW', ''), details
