"""Filter ``instance_metadata``: instance relations of images.

Captures the instance keys Nova sets on snapshots and backups
(``instance_uuid``, ``image_type``, ``backup_type``, ...; option
``instance_keys``) from image creates and updates, and the
``X-Instance-UUID`` / ``X-Nova-Installation-UUID`` request headers.  They
are kept in the mapping store, stripped before the registry sees them and
given back to callers allowed by ``instance_aware:get_instance_metadata``.

Trust: a relation always belongs to the project that owns the image, so a
user relating an image to somebody else's instance only ever affects
answers given to their own project.  Assertions from callers passing
``instance_aware:set_instance_metadata`` (by default a service token, as
Nova sends) are recorded as *trusted*; the query API tells the two apart.
An edit of any instance key by a caller without that right clears the
mark (see :meth:`InstanceMetadataFilter.relation`).

The filter also serves the instance query API
(:mod:`instance_aware.api.instances`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import webob

from instance_aware import uuids
from instance_aware.api import instances as query_api
from instance_aware.capture.filter import CapturingFilter
from instance_aware.http import faults
from instance_aware.http.request import Request
from instance_aware.store import models
from instance_aware.store.records import RelationFields

INSTANCE_UUID = 'instance_uuid'
INSTALLATION_UUID = 'nova_installation_uuid'
UUID_KEYS = (INSTANCE_UUID, INSTALLATION_UUID)


class InstanceMetadataFilter(CapturingFilter):
    """Capture, strip, store and give back instance relations."""

    ROUTES = frozenset({'images', 'image', 'image_instance',
                        'instance_images'})
    CONCERN = models.INSTANCE
    HEADERS = {'HTTP_X_INSTANCE_UUID': INSTANCE_UUID,
               'HTTP_X_NOVA_INSTALLATION_UUID': INSTALLATION_UUID}

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self.config.instance_keys) | set(UUID_KEYS)

    def may_read(self, req: Request, owner: str | None) -> bool:
        return self.checks.get_instance_metadata(req.context, owner)

    def process_request(self, req: Request) -> webob.Response | None:
        if req.route.name in ('image_instance', 'instance_images'):
            return query_api.handle(self.records, self.checks, req)
        return super().process_request(req)

    def validate(self, req: Request, values: Mapping[str, str],
                 previous: Mapping[str, str] | None) -> None:
        invalid = invalid_uuids(values)
        if invalid:
            key = invalid[0]
            raise faults.bad_request(
                f"Invalid value for property '{key}': '{values[key]}' is "
                'not a UUID.')

    def relation(self, req: Request, owner: str | None,
                 values: Mapping[str, str],
                 previous: RelationFields | None,
                 before: Mapping[str, str] | None = None
                 ) -> RelationFields | None:
        """The relation, and whether a trusted caller asserted it.

        *Trusted* covers every instance key, not only the indexed fields:
        a caller failing ``instance_aware:set_instance_metadata`` who
        changes any of them (``user_id``, ``base_image_ref``, ...) makes
        the relation its own, untrusted assertion.  The owner may still
        edit its image's properties, as in bare Glance; the relation just
        stops claiming that a service asserted them.  A trusted caller
        changing the instance, installation or types records itself as
        the asserter; changing another key keeps who asserted the
        relation (it does not vouch for values somebody else set).
        """
        if not values:
            return None
        if previous is not None and before is not None and (
                dict(before) == dict(values)):
            return previous
        trusted = self.checks.set_instance_metadata(req.context, owner)
        fields = relation_of(values, trusted=trusted,
                             asserted_by=req.context.user_id)
        if previous is not None and relates_alike(previous, fields):
            if trusted or not previous.trusted:
                return previous
            return dataclasses.replace(
                previous, trusted=False, asserted_by=req.context.user_id)
        return fields


# -- the instance keys, without the filter (shared with cmd adopt) ---------

def invalid_uuids(values: Mapping[str, str]) -> list[str]:
    """The keys of :data:`UUID_KEYS` whose value in ``values`` is not a
    UUID, in that order."""
    return [key for key in UUID_KEYS
            if key in values and not uuids.is_uuid(values[key])]


def relation_of(values: Mapping[str, str], *, trusted: bool = False,
                asserted_by: str | None = None) -> RelationFields:
    """The indexed relation the instance keys ``values`` make, asserted
    by ``asserted_by`` (trusted or not); UUIDs are indexed in their
    canonical form."""
    return RelationFields(
        instance_uuid=_indexed(values.get(INSTANCE_UUID)),
        installation_uuid=_indexed(values.get(INSTALLATION_UUID)),
        image_type=values.get('image_type'),
        backup_type=values.get('backup_type'),
        trusted=trusted, asserted_by=asserted_by)


def relates_alike(one: RelationFields, other: RelationFields) -> bool:
    """Whether two relations relate the image alike (whoever asserted
    them, trusted or not)."""
    return dataclasses.replace(
        one, trusted=other.trusted, asserted_by=other.asserted_by) == other


def _indexed(value: str | None) -> str | None:
    """A UUID in canonical form; anything else as it is."""
    if value is None or not uuids.is_uuid(value):
        return value
    return uuids.canonical(value)
