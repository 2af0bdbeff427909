"""The digest store on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa

from instance_aware.store import engine as ia_engine
from instance_aware.store import models
from instance_aware.store.digests import Digests

pytestmark = pytest.mark.database

IMAGE = '0b9f3d6e-1c2a-4e5f-8a7b-6c5d4e3f2a1b'
SHA = hashlib.sha512(b'data').hexdigest()
OTHER = hashlib.sha512(b'other').hexdigest()


@pytest.fixture
def digests(migrated_engine: sa.Engine) -> Digests:
    return Digests(ia_engine.Database(migrated_engine), 'r1')


def test_record_get_and_replace(digests: Digests) -> None:
    assert digests.get(IMAGE) is None
    first = digests.record(IMAGE, algo='sha512', digest=SHA, size=4,
                           source=models.STAGE, state=models.STAGED)
    assert digests.get(IMAGE) == first
    assert (first.algo, first.digest, first.size, first.source,
            first.state) == ('sha512', SHA, 4, models.STAGE, models.STAGED)
    assert digests.mark_tampered(IMAGE, SHA)
    second = digests.record(IMAGE, algo='sha512', digest=OTHER, size=5,
                            source=models.UPLOAD)
    assert (second.digest, second.state, second.tampered_at,
            second.verified_at) == (OTHER, models.RECORDED, None, None)
    assert second.recorded_at >= first.recorded_at


def test_registries_are_kept_apart(digests: Digests,
                                   migrated_engine: sa.Engine) -> None:
    other = Digests(ia_engine.Database(migrated_engine), 'r2')
    digests.record(IMAGE, algo='sha512', digest=SHA, size=4,
                   source=models.UPLOAD)
    assert other.get(IMAGE) is None
    other.record(IMAGE, algo='sha256', digest='ab', size=1,
                 source=models.UPLOAD)
    mine = digests.get(IMAGE)
    assert mine is not None and mine.digest == SHA


def test_marks_apply_only_to_the_digest_checked(digests: Digests) -> None:
    digests.record(IMAGE, algo='sha512', digest=SHA, size=4,
                   source=models.STAGE, state=models.STAGED)
    assert not digests.confirm(IMAGE, OTHER)
    assert not digests.mark_tampered(IMAGE, OTHER)
    assert not digests.mark_verified('missing', SHA)
    assert digests.confirm(IMAGE, SHA)
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.state, record.verified_at, record.tampered_at) == (
        models.RECORDED, None, None)
    assert digests.mark_tampered(IMAGE, SHA)
    tampered = digests.get(IMAGE)
    assert tampered is not None and tampered.state == models.TAMPERED
    assert tampered.tampered_at is not None
    # Restored data matches again: recorded, with the tampering as history.
    assert digests.mark_verified(IMAGE, SHA)
    restored = digests.get(IMAGE)
    assert restored is not None
    assert (restored.state, restored.tampered_at) == (
        models.RECORDED, tampered.tampered_at)
    assert restored.verified_at is not None


def test_fingerprint_recorded_learned_and_forgotten(digests: Digests) -> None:
    fingerprint = 'f' * 64
    first = digests.record(IMAGE, algo='sha512', digest=SHA, size=4,
                           source=models.UPLOAD, fingerprint=fingerprint)
    assert first.fingerprint == fingerprint
    stored = digests.get(IMAGE)
    assert stored is not None and stored.fingerprint == fingerprint
    # New data without one (an import's digest): none until learned.
    digests.record(IMAGE, algo='sha512', digest=OTHER, size=5,
                   source=models.IMPORT)
    adopted = digests.get(IMAGE)
    assert adopted is not None and adopted.fingerprint is None
    # Learned only by the verification of the digest held now.
    assert not digests.mark_verified(IMAGE, SHA, fingerprint='a' * 64)
    unchanged = digests.get(IMAGE)
    assert unchanged is not None and unchanged.fingerprint is None
    assert digests.mark_verified(IMAGE, OTHER, fingerprint='b' * 64)
    learned = digests.get(IMAGE)
    assert learned is not None
    assert (learned.fingerprint, learned.state) == ('b' * 64,
                                                    models.RECORDED)
    # A later verification without one keeps it.
    assert digests.mark_verified(IMAGE, OTHER)
    kept = digests.get(IMAGE)
    assert kept is not None and kept.fingerprint == 'b' * 64


def test_expect_import_only_for_images_without_a_record(
        digests: Digests) -> None:
    assert digests.expect_import(IMAGE)
    pending = digests.get(IMAGE)
    assert pending is not None
    assert (pending.source, pending.state, pending.digest, pending.size) == (
        models.IMPORT, models.PENDING, '', 0)
    assert not digests.expect_import(IMAGE)
    adopted = digests.record(IMAGE, algo='sha512', digest=SHA, size=4,
                             source=models.IMPORT)
    assert (adopted.state, adopted.digest) == (models.RECORDED, SHA)
    other = '1c0a7c36-53a8-4a59-9e0e-2c1e6d9c0b77'
    digests.record(other, algo='sha512', digest=OTHER, size=5,
                   source=models.STAGE, state=models.STAGED)
    assert not digests.expect_import(other)
    kept = digests.get(other)
    assert kept is not None and kept.state == models.STAGED


def test_listing_filters_and_order(digests: Digests,
                                   migrated_engine: sa.Engine) -> None:
    first, second, third = (f'00000000-0000-4000-8000-00000000000{n}'
                            for n in range(3))
    digests.record(first, algo='sha512', digest=SHA, size=4,
                   source=models.UPLOAD)
    digests.record(second, algo='sha512', digest=OTHER, size=5,
                   source=models.UPLOAD)
    digests.expect_import(third)
    Digests(ia_engine.Database(migrated_engine), 'r2').record(
        first, algo='sha512', digest=SHA, size=4, source=models.UPLOAD)
    assert digests.mark_verified(first, SHA)
    assert digests.mark_tampered(second, OTHER)

    def ids(unverified: bool = False, tampered: bool = False,
            image_ids: tuple[str, ...] = ()) -> list[str]:
        return [d.image_id for d in digests.listing(
            unverified=unverified, tampered=tampered, image_ids=image_ids)]

    assert ids() == [first, second, third]
    assert ids(unverified=True) == [second, third]
    assert ids(tampered=True) == [second]
    assert ids(image_ids=(third, first)) == [first, third]
    assert ids(unverified=True, image_ids=(first,)) == []
