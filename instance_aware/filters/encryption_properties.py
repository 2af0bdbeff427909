"""Filter ``encryption_properties``: LUKS image-encryption properties.

Validates, stores and strips ``os_encrypt_*``, ``os_decrypt_*`` and the
legacy ``cinder_encryption_key_*`` properties, gives them back to callers
allowed to read them, and owns the key lifecycle through castellan.
"""

from __future__ import annotations

from instance_aware.filters import base


class EncryptionPropertiesFilter(base.Filter):
    """Validate, store, strip and give back encryption properties."""
