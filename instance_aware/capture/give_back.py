"""Giving captured keys back in image representations, and only there.

The registry never holds captured keys, so every image representation a
capturing filter answers with is completed from the store: the stored
values go into the images whose owner's keys the caller may read, and any
captured key is removed from the others (an image created before the
stack was deployed may still carry some in the registry).  These are the
steps without the filter:
:meth:`instance_aware.capture.base.CaptureBase.give_back` decides who may
read and calls them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from instance_aware.capture import bodies
from instance_aware.store.records import Records


def values_of(records: Records, concern: str, image_ids: set[str],
              shared: dict[str, dict[str, dict[str, str]]] | None
              ) -> dict[str, dict[str, str]]:
    """``concern``'s stored values of ``image_ids``.

    ``shared`` are the values of every concern a read-only request
    already loaded (see :attr:`~instance_aware.capture.state.
    RequestState.loaded`): the first filter to give keys back reads the
    store for all concerns, the others find theirs there.  Requests that
    write pass ``None`` and read afresh, so nobody sees values from before
    their own write.
    """
    if shared is None:
        loaded = records.values_of(image_ids)
    else:
        missing = image_ids - shared.keys()
        if missing:
            fresh = records.values_of(missing)
            for image_id in missing:
                shared[image_id] = fresh.get(image_id, {})
        loaded = {i: shared[i] for i in image_ids}
    return {image_id: concerns[concern]
            for image_id, concerns in loaded.items() if concern in concerns}


def restore(images: list[Any], keys: Collection[str], readable: set[str],
            values: Mapping[str, Mapping[str, str]]) -> bool:
    """Merge ``values`` into the ``readable`` images, strip ``keys`` from
    the others; ``True`` if any image changed."""
    changed = False
    for image in images:
        if not isinstance(image, dict):
            continue
        image_id = image.get('id')
        if image_id not in readable:
            changed = bodies.strip_from(image, keys) or changed
        elif isinstance(image_id, str) and image_id in values:
            changed = bodies.merge_into(image, values[image_id]) or changed
    return changed
