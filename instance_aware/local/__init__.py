"""A real Glance with the stack on 127.0.0.1: ``instance-aware serve`` and
the functional tests (``glance`` builds it, ``server`` runs it under
gunicorn, ``identity`` acts as any project against its noauth flavor)."""
