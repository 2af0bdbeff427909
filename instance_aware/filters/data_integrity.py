"""Filter ``data_integrity``: downloads checked against what was uploaded.

Image data is hashed as it streams through, never buffered: uploads (``PUT
/v2/images/{id}/file``) and stages (``PUT .../stage``) through a reader
wrapping ``wsgi.input``, full downloads (``GET .../file``) through an
iterator wrapping the registry's response; the chunks are never copied.
Past the first few MiB of a body the hashing runs in a thread of its own
beside the transfer
(:class:`~instance_aware.integrity.hashing.StreamHasher`), so that it
costs the transfer little where a core is free.  The algorithm is Glance's
``os_hash_algo``: ``[DEFAULT] hashing_algorithm`` when Glance's options
are registered in the process, else this filter's option
``hashing_algorithm`` (sha512, Glance's default).  In the same pass
a BLAKE3 fingerprint of the bytes is computed (option
``fingerprint_image_data``, on by default): downloads are checked against
it, because sha512 (about 0.8 GiB/s a core) is slower than a download from
a local store, and BLAKE3 (about 6 GiB/s) is not, with the same strength
against a tampered file.  Option ``verify_image_data`` turns everything
off.

Recording (:mod:`instance_aware.integrity.uploads`).  After the registry
answers 204, and only if the stack saw the whole body go in, the digest is
recorded in ``ia_image_data``.

Stages and imports (:mod:`instance_aware.integrity.imports`).  A staged
digest, or an import the stack could not see, is settled against the
registry's own digest at the first full download.

Checking (:mod:`instance_aware.integrity.downloads`).  A full download (a
200, or a 206 covering the whole image) is hashed on the way out and
compared with the record; partial ranges pass unchecked.  The last
non-empty chunk is held back until the registry's iterator ends.  On a
mismatch that chunk is never sent, an ``ALERT`` is logged at error level
with the image id, the record is marked ``tampered`` and
:class:`~instance_aware.integrity.checked_body.ImageDataMismatch` is
raised.  The registry's ``Content-Length`` is already on the wire, so the
client gets a short body: a WSGI server closes the connection when the
body iterator raises after the headers went out (gunicorn logs "Error
handling request" with the traceback), and HTTP clients report an
incomplete read, never silently wrong bytes.  If not a byte was sent yet
(a one-chunk image), gunicorn answers 500 instead.  Every later download
is checked again and fails again; one that matches (the operator restored
the file) is served and the record is ``recorded`` again, ``tampered_at``
kept as history.  A matching download stamps ``verified_at``.

How a body ends (:class:`~instance_aware.integrity.checked_body.Ending`)
is decided exactly once, however it ends: the registry's iterator is
exhausted (judged), it raises (Glance's image cache raises "Checksum
verification failed" at the end of a changed file: judged like an
exhausted one once the recorded size arrived, the registry's error is
raised again; before that size the transfer is *broken off*, logged, not
marked: a failure to read is no evidence of tampering), or the server
closes the body before its end (the client went away: *abandoned*, nothing
judged).

If the mapping database is down the download is served unchecked, with a
warning: images stay available without it.  ``HEAD``, other statuses and
images without a record (data uploaded around the stack, locations added
by API) pass unchecked.  The registry is called through webob
(:meth:`~instance_aware.filters.base.Filter.forward`), which streams the
body of an application that starts its response before returning it
(Glance and the standalone proxy do) and would read whole the body of one
that starts it later.

Place in the stack: innermost, next to the registry, so the bytes hashed
are exactly the bytes the registry received and sent, whatever the outer
filters do; Glance's ``cache`` filter sits inside it in the pipeline, so
images served from Glance's image cache are checked too.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any, ClassVar

import webob
from oslo_config import cfg
from oslo_log import log as logging

from instance_aware.filters import base
from instance_aware.http import reading
from instance_aware.http.request import Request, declared_length
from instance_aware.integrity import (
    downloads,
    import_plugins,
    imports,
    uploads,
)
from instance_aware.integrity.checked_body import CheckedBody
from instance_aware.integrity.hashing import HashingReader, fingerprinter
from instance_aware.store import errors as store_errors
from instance_aware.store import models
from instance_aware.store.digests import Digest, Digests

LOG = logging.getLogger(__name__)

#: Glance's default ``hashing_algorithm``.
DEFAULT_ALGORITHM = 'sha512'
#: The requests this filter acts on: (method, route name).
_HANDLED = frozenset({('PUT', 'image_file'), ('PUT', 'image_stage'),
                      ('GET', 'image_file'), ('POST', 'image_import')})

class DataIntegrityFilter(base.Filter):
    """Record the digest of uploaded data; check full downloads."""

    ROUTES: ClassVar[frozenset[str | None]] = frozenset(
        {'image_file', 'image_stage', 'image_import'})

    def handles(self, environ: dict[str, Any]) -> bool:
        """Uploads, stages, imports and downloads of one image; anything
        else (``HEAD`` included) passes untouched, as does everything
        when ``verify_image_data`` is off."""
        found = reading.of(environ)
        route = found.route
        return ((found.method, route.name) in _HANDLED
                and route.image_id is not None
                and bool(self.config.verify_image_data))

    def process_request(self, req: Request) -> webob.Response | None:
        # The route is read before the registry is called: the registry's
        # own router rewrites the paths in the environ it is given.
        route, method = req.route, req.verb
        image_id = route.image_id
        assert image_id is not None
        if method == 'PUT':
            return self._upload(req, image_id, models.UPLOAD
                                if route.name == 'image_file'
                                else models.STAGE)
        response = self.forward(req)
        if method == 'POST':
            if response.status_code == 202:
                imports.note(self.digests, image_id)
            return response
        return self._check(response, req, image_id)

    # -- configuration -----------------------------------------------------

    @functools.cached_property
    def digests(self) -> Digests:
        """The digests of this registry's images."""
        return Digests(self.database, self.config.registry_id)

    @property
    def algorithm(self) -> str:
        """Glance's ``hashing_algorithm``, else ours (default sha512)."""
        try:
            name = self.oslo_conf.hashing_algorithm
        except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
            name = None
        return str(name or self.config.hashing_algorithm or DEFAULT_ALGORITHM)

    def _rewriting_plugins(self) -> list[str]:
        """Import plugins that the configuration says may rewrite data."""
        return import_plugins.rewriting(
            self.oslo_conf, self.config.image_conversion_enabled)

    # -- uploads -----------------------------------------------------------

    def _upload(self, req: Request, image_id: str,
                source: str) -> webob.Response:
        """Forward an upload or a stage through a hashing reader, and
        record its digest if the registry took it whole; the reader is
        let go however the registry's call ends."""
        algo = self.algorithm
        try:
            hasher = hashlib.new(algo)
        except ValueError:
            LOG.error('Unknown hashing algorithm %r: data of image %s is '
                      'not recorded', algo, image_id)
            return self.forward(req)
        more = ((fingerprinter(),) if self.config.fingerprint_image_data
                else ())
        reader = HashingReader(req.environ['wsgi.input'], hasher, *more)
        req.environ['wsgi.input'] = reader
        try:
            response = self.forward(req)
            if response.status_code == 204:
                uploads.record(self.digests, image_id, source, algo, reader,
                               declared_length(req.environ))
        finally:
            reader.abandon()  # no-op once the digest was taken
        return response

    # -- downloads ---------------------------------------------------------

    def _check(self, response: webob.Response, req: Request,
               image_id: str) -> webob.Response:
        """The download, checked on its way out when it is the whole
        image and the image has a record."""
        body = response.app_iter
        if not downloads.whole_image(response.status_code,
                                     response.headers.get('Content-Range')):
            return response  # partial or refused
        try:
            expected = self._expected(req, image_id)
        except store_errors.StoreError as exc:
            LOG.warning('Mapping database unavailable: image %s is served '
                        'without checking its data: %s', image_id, exc)
            return response
        except BaseException:
            close = getattr(body, 'close', None)
            if close is not None:
                close()
            raise
        if expected is None:
            return response
        checked = CheckedBody(
            body, expected,
            functools.partial(downloads.settle, self.digests, expected),
            fingerprint=self.config.fingerprint_image_data)
        # A new response object: setting ``app_iter`` would drop the
        # registry's ``Content-Length``.
        return webob.Response(status=response.status,
                              headerlist=response.headerlist,
                              app_iter=checked)

    def _expected(self, req: Request, image_id: str) -> Digest | None:
        record = self.digests.get(image_id)
        if record is None or record.state not in (models.STAGED,
                                                  models.PENDING):
            return record
        # Data the registry stored since: its digest settles the record.
        shown_req = Request({k: v for k, v in req.environ.items()
                             if k != 'HTTP_ACCEPT'})
        found = imports.shown(self.show_image(shown_req, image_id))
        if found is None:
            LOG.warning('Image %s: the registry shows no digest yet; '
                        'served without checking its data', image_id)
            return None
        if record.state == models.STAGED:
            return imports.settle_stage(self.digests, record, found,
                                        self._rewriting_plugins)
        return imports.adopt(self.digests, record, found)
