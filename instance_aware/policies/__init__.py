"""Policy rules registered in code (``oslo.policy.policies`` entry point)."""

from __future__ import annotations

import itertools

from oslo_policy import policy

from instance_aware.policies import base, encryption, instances, locations


def list_rules() -> list[policy.RuleDefault]:
    return list(itertools.chain(
        base.list_rules(),
        instances.list_rules(),
        encryption.list_rules(),
        locations.list_rules(),
    ))
