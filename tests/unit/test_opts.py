"""The option groups gathered for ``oslo-config-generator``."""

from __future__ import annotations

from instance_aware import config, opts


def test_list_opts_returns_copies():
    listed = dict(opts.list_opts())
    assert set(listed) == {'instance_aware', 'instance_aware_registry',
                           'instance_aware_keys', 'instance_aware_proxy'}
    ours = listed['instance_aware']
    assert {o.dest for o in ours} >= {'connection', 'registry_id'}
    assert all(a is not b for a, b in zip(ours, config.OPTS, strict=True))
    assert {o.dest for o in listed['instance_aware_registry']} >= {
        'endpoint', 'trusted_headers', 'auth_type', 'timeout'}
