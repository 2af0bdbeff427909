"""A real Glance with the stack on 127.0.0.1, and the servers around it.

Dev tooling, not the product (the wheel ships without it), as Glance keeps
its own functional servers under ``glance/tests``: ``./tools/dev serve``
(:mod:`.serve`), ``tools/tempest`` (:mod:`.tempest`), the functional tests
and ``bench/`` use it.  ``glance`` builds Glance in-process, ``server``
runs it (and ``keystone``, ``barbican``) under gunicorn, ``identity`` acts
as any project against its noauth flavor.  gunicorn imports ``wsgi``,
``keystone_wsgi``, ``barbican_wsgi`` and ``gunicorn_conf`` by dotted
path: :mod:`.server` puts the checkout on their ``PYTHONPATH``.
"""
