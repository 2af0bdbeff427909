"""Filter ``encryption_properties``: LUKS image-encryption properties.

Captures the properties of the Glance spec "Standardized image encryption"
(2025.1: ``os_encrypt_*``, ``os_decrypt_*``) and the legacy
``cinder_encryption_key_*`` pair: validated, kept in the mapping store,
stripped before the registry sees them, given back to callers allowed by
``instance_aware:get_encryption_properties`` and filterable in lists like
the instance keys.

Glance 33 validates none of them; once they are stripped it cannot act on
them either, so what it would do for an encrypted image is done here:
the key and format are fixed once the image has data, and an import that
Glance's conversion plugin would convert is refused (option
``image_conversion_enabled``).  The names and their valid values are
:mod:`instance_aware.filters.encryption_values`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import webob
import webob.exc
from oslo_log import log as logging

from instance_aware.capture import state
from instance_aware.capture.filter import CapturingFilter
from instance_aware.filters.encryption_values import (
    FIXED_WITH_DATA,
    FORMAT,
    KEY_ID,
    KEYS,
    LEGACY_KEY_ID,
    keys_of,
    problems,
)
from instance_aware.http import documents, faults
from instance_aware.http.request import Request
from instance_aware.keys import failures as key_errors
from instance_aware.keys import lifecycle as key_lifecycle
from instance_aware.keys import opts as key_opts
from instance_aware.store import errors as store_errors
from instance_aware.store import models

LOG = logging.getLogger(__name__)

#: Import methods that only copy existing data (never converted).
COPY_METHODS = frozenset({'copy-image'})


class EncryptionPropertiesFilter(CapturingFilter):
    """Validate, store, strip and give back encryption properties."""

    ROUTES = frozenset({'images', 'image', 'image_import'})
    CONCERN = models.ENCRYPTION

    def may_read(self, req: Request, owner: str | None) -> bool:
        return self.checks.get_encryption_properties(req.context, owner)

    #: The answer when the deployment has no key manager (the log names
    #: the missing option): a configuration error, not an outage, so a
    #: 400 that clients do not retry, as Glance answers a request for a
    #: feature its configuration leaves out (a disabled import method).
    NO_KEY_MANAGER = ('This deployment accepts no encrypted images: no key '
                      'manager is configured.  Nothing was changed.')

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        problem = key_lifecycle.configuration_problem(self.oslo_conf)
        if problem is not None:
            LOG.error('Encrypted images will be refused (400): %s.  '
                      'Configure the key manager as for Glance, or set '
                      '[%s] enabled = false to store encryption properties '
                      'without checking their secrets.', problem,
                      key_opts.GROUP)

    @property
    def keys(self) -> frozenset[str]:
        return KEYS

    @functools.cached_property
    def lifecycle(self) -> key_lifecycle.KeyLifecycle | None:
        """The key lifecycle, unless ``[instance_aware_keys] enabled`` is
        off (built on first use: castellan is not loaded otherwise)."""
        if not key_opts.KeyOptions.load(self.oslo_conf).enabled:
            return None
        return key_lifecycle.KeyLifecycle(
            self.oslo_conf, self.records.db, self.config.registry_id)

    def process_request(self, req: Request) -> webob.Response | None:
        if req.route.name == 'image_import':
            if req.verb == 'POST':
                self._check_import(req)
            return None
        return super().process_request(req)

    # -- validation --------------------------------------------------------

    def authorise(self, req: Request, image_id: str) -> None:
        """Any operation on encryption properties needs the write rule
        for the image's owner, whatever the values: the answer never
        depends on them (the registry's 404 for an image the caller
        cannot see)."""
        owner, _status = self._target(req, {})
        if not self.checks.set_encryption_properties(req.context, owner):
            raise _refused()

    def validate(self, req: Request, values: Mapping[str, str],
                 previous: Mapping[str, str] | None) -> None:
        owner, status = self._target(req, previous)
        # Authorisation first (updates were authorised already).
        if previous is None and not (
                self.checks.set_encryption_properties(req.context, owner)):
            raise _refused()
        found = problems(values, list(self.config.encryption_formats))
        if found:
            raise faults.bad_request(found[0])
        if previous is not None and dict(previous) == dict(values):
            return
        if previous is None or status == 'queued':
            self._check_key(req, values, previous)
            return
        changed = [key for key in FIXED_WITH_DATA
                   if previous.get(key) != values.get(key)]
        if changed:
            raise faults.bad_request(
                f"Property '{changed[0]}' cannot be set or changed: the "
                f"image has data (status '{status}').  Upload the "
                'encrypted data to a new image instead.')

    def _check_key(self, req: Request, values: Mapping[str, str],
                   previous: Mapping[str, str] | None) -> None:
        """Every new key, in either pair, must be a secret the caller can
        read."""
        lifecycle = self.lifecycle
        if lifecycle is None:
            return
        for name, value in (KEY_ID, values.get(KEY_ID)), (
                LEGACY_KEY_ID, values.get(LEGACY_KEY_ID)):
            if not value or (previous is not None
                             and previous.get(name) == value):
                continue
            try:
                lifecycle.check_readable(req.context, value)
            except key_errors.KeyNotAccessible:
                raise faults.bad_request(
                    f"Invalid value for property '{name}': no secret "
                    f"'{value}' is available to you in the key manager."
                ) from None
            except key_errors.KeyManagerNotConfigured as exc:
                LOG.error('Encrypted image refused: %s', exc)
                raise faults.bad_request(self.NO_KEY_MANAGER) from None
            except key_errors.KeyLifecycleError as exc:
                LOG.error('Key manager unavailable checking secret %s: %s',
                          value, exc)
                raise faults.unavailable(
                    'The key manager is unavailable; nothing was changed.'
                    '  Retry later.') from None

    # -- key lifecycle -----------------------------------------------------

    def create(self, req: Request) -> webob.Response:
        response = super().create(req)
        if response.status_int == 201:
            self._consume(req, documents.read(response))
        return response

    def update(self, req: Request) -> webob.Response:
        image_id = req.route.image_id
        assert image_id is not None
        before = self.stored_before(req, image_id)
        response = super().update(req)
        old = keys_of(before.values) if before is not None and (
            before.state == models.ACTIVE) else {}
        if response.status_int == 200:
            self._consume(req, documents.read(response), old)
        return response

    def delete(self, req: Request) -> webob.Response:
        image_id = req.route.image_id
        assert image_id is not None
        before = self.stored_before(req, image_id)
        response = super().delete(req)
        lifecycle = self.lifecycle
        if (response.status_int == 204 and lifecycle is not None
                and before is not None and keys_of(before.values)):
            lifecycle.on_deleted(req.context, image_id)
        return response

    def _consume(self, req: Request, image: object,
                 old: Mapping[str, tuple[str, str | None]] | None = None
                 ) -> None:
        """Register the image as a consumer of each key it now names, and
        drop its consumer of a key a pair no longer names.

        The image exists whatever happens here: a failure is recorded for
        ``reconcile`` to finish, never turned into an error response.
        """
        old = old or {}
        lifecycle = self.lifecycle
        if lifecycle is None or not isinstance(image, dict):
            return
        image_id = image.get('id')
        if not isinstance(image_id, str):
            return
        try:
            stored = self.records.get(image_id, self.CONCERN)
        except store_errors.StoreError:
            LOG.exception('Key of image %s not registered; reconcile will',
                          image_id)
            return
        keys = keys_of(stored.values) if stored is not None else {}
        for name in old.keys() - keys.keys():
            lifecycle.on_detached(req.context, image_id, name)
        for name, key in keys.items():
            if old.get(name) == key:
                continue
            try:
                lifecycle.on_created(req.context, image_id, key[0], key[1],
                                     key_property=name)
            except (key_errors.KeyLifecycleError, store_errors.StoreError,
                    LookupError) as exc:
                LOG.warning('Image %s: consumer of secret %s (%s) not '
                            'registered (%s); reconcile will retry',
                            image_id, key[0], name, exc)

    def _target(self, req: Request, previous: Mapping[str, str] | None
                ) -> tuple[str | None, str]:
        """Owner and status of the image the request changes.

        A create makes a ``queued`` image of the caller's project; an
        update asks the registry as the caller (once per request), so an
        image the caller cannot see is answered as the registry answers
        it.
        """
        if previous is None:
            return req.context.project_id, 'queued'
        image_id = req.route.image_id
        if image_id is None:  # only image and import routes get here
            raise faults.not_found('No image found.')
        targets = state.of(req.environ).targets
        if image_id not in targets:
            shown = self.show_image(req, image_id)
            image = documents.read(shown)
            if shown.status_int != 200 or not isinstance(image, dict):
                raise _as_exception(shown)
            targets[image_id] = (image.get('owner'),
                                 str(image.get('status')))
        return targets[image_id]

    # -- import ------------------------------------------------------------

    def _check_import(self, req: Request) -> None:
        """Refuse an import Glance's conversion plugin would convert.

        Only said to callers who may read the image's encryption
        properties; anybody else gets the registry's own answer.
        """
        if not self.config.image_conversion_enabled:
            return
        # Read as Glance reads it, whatever its Content-Type.
        body = req.json_body(self.config.max_json_body_size)
        method = body.get('method') if isinstance(body, dict) else None
        name = method.get('name') if isinstance(method, dict) else None
        if name in COPY_METHODS:
            return
        image_id = req.route.image_id
        assert image_id is not None
        stored = self.records.get(image_id, self.CONCERN)
        if stored is None or stored.state == models.DELETED or not (
                stored.values.get(KEY_ID) or stored.values.get(FORMAT)
                or stored.values.get(LEGACY_KEY_ID)):
            return
        if not self.readable(req, stored.project_id):
            return
        raise faults.bad_request(
            f'Image {image_id} is encrypted and the image conversion '
            'plugin is enabled: encrypted images cannot be converted.  '
            'The image stays queued.')


def _refused() -> webob.exc.WSGIHTTPException:
    return faults.forbidden(
        'You are not allowed to set the encryption properties of this '
        'image.')


def _as_exception(response: webob.Response) -> webob.exc.WSGIHTTPException:
    """The registry's error response, raised as is."""
    exc_class = webob.exc.status_map.get(response.status_int,
                                         webob.exc.HTTPBadGateway)
    exc: webob.exc.WSGIHTTPException = exc_class()
    exc.body = response.body
    exc.content_type = response.content_type
    return exc
