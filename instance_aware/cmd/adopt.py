"""Adopt the keys Glance stored before the stack was deployed.

Images created before the filters were in the pipeline carry Nova's
instance keys (and maybe encryption properties) as ordinary Glance
properties: list filters and the query API, answered from the mapping
store, would not find them.  :func:`adopt` walks every image of Glance
as an administrator and, for each one holding captured keys:

1. writes them to the store as an active record (values the store already
   has win: they were written through the stack, after Glance's copy);
2. removes them from Glance with one JSON-patch.

In that order, so a crash leaves the keys in both places, never in none;
running the command again finishes the job.  Values the filters would
refuse are left in Glance and reported.  Adopted relations are recorded
as *untrusted* (nobody can tell who set them) unless ``trust`` says the
operator vouches for them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from instance_aware.capture import listing
from instance_aware.filters import encryption_values as encryption
from instance_aware.filters import instance_metadata
from instance_aware.store import models
from instance_aware.store.records import Records, RelationFields


@dataclasses.dataclass
class AdoptSummary:
    scanned: int = 0
    adopted: int = 0
    keys_moved: int = 0
    refused: list[str] = dataclasses.field(default_factory=list)

    def lines(self, dry_run: bool) -> list[str]:
        verb = 'would be' if dry_run else 'were'
        return [
            f'{self.scanned} images scanned',
            f'{self.adopted} images {verb} adopted ({self.keys_moved} keys '
            'moved out of Glance)',
            f'{len(self.refused)} images left alone (invalid values)',
            *[f'  {reason}' for reason in self.refused],
        ]


@dataclasses.dataclass(frozen=True)
class Concern:
    """What one capturing filter owns, for adoption."""

    name: str
    keys: frozenset[str]
    problems: Callable[[Mapping[str, str]], list[str]]


def concerns(instance_keys: Collection[str],
             encryption_formats: list[str]) -> list[Concern]:
    """The concerns the stack captures, configured as the filters are."""

    def instance_problems(values: Mapping[str, str]) -> list[str]:
        return [f"'{key}' is not a UUID"
                for key in instance_metadata.invalid_uuids(values)]

    return [
        Concern(models.INSTANCE,
                frozenset(instance_keys) | set(instance_metadata.UUID_KEYS),
                instance_problems),
        Concern(models.ENCRYPTION, encryption.KEYS,
                lambda values: encryption.problems(values,
                                                   encryption_formats)),
    ]


def adopt(records: Records, images: Iterable[dict[str, Any]],
          remove: Callable[[str, list[str]], None],
          wanted: list[Concern], *, dry_run: bool = False,
          trust: bool = False) -> AdoptSummary:
    """Move captured keys from ``images`` (Glance's) into ``records``.

    ``remove(image_id, keys)`` deletes properties from Glance.
    """
    summary = AdoptSummary()
    for image in images:
        summary.scanned += 1
        image_id = image.get('id')
        if not isinstance(image_id, str):
            continue
        found = {concern.name: {k: v for k, v in image.items()
                                if k in concern.keys and isinstance(v, str)}
                 for concern in wanted}
        if not any(found.values()):
            continue
        reasons = [f'image {image_id}: {reason}' for concern in wanted
                   for reason in concern.problems(found[concern.name])]
        if reasons:
            summary.refused.append('; '.join(reasons))
            continue
        moved = [key for values in found.values() for key in values]
        summary.adopted += 1
        summary.keys_moved += len(moved)
        if dry_run:
            continue
        created = listing.parse_time(image.get('created_at'))
        for concern in wanted:
            if not found[concern.name]:
                continue
            stored = records.get(image_id, concern.name)
            values = dict(found[concern.name])
            if stored is not None and stored.state == models.ACTIVE:
                values.update(stored.values)
            relation: RelationFields | None = None
            if concern.name == models.INSTANCE:
                relation = instance_metadata.relation_of(values,
                                                         trusted=trust)
                kept = stored.relation if stored is not None else None
                if kept is not None and instance_metadata.relates_alike(
                        kept, relation):
                    relation = kept  # unchanged: who asserted it stays
            records.replace(image_id, concern.name, image.get('owner'),
                            values, relation, created)
        remove(image_id, moved)
    return summary
