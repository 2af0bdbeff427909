"""The encryption properties: their names, their valid values, their keys.

What an image's encryption properties may hold and which key manager
secrets they name, without the filter: shared by
:mod:`instance_aware.filters.encryption_properties` (which refuses
invalid values with the first problem) and ``cmd adopt`` (which leaves
images with problems in Glance and reports them).
"""

from __future__ import annotations

from collections.abc import Mapping

from instance_aware import uuids

FORMAT = 'os_encrypt_format'
CIPHER = 'os_encrypt_cipher'
KEY_ID = 'os_encrypt_key_id'
DELETION_POLICY = 'os_encrypt_key_deletion_policy'
DECRYPT_CONTAINER_FORMAT = 'os_decrypt_container_format'
DECRYPT_SIZE = 'os_decrypt_size'
LEGACY_KEY_ID = 'cinder_encryption_key_id'
LEGACY_DELETION_POLICY = 'cinder_encryption_key_deletion_policy'

STANDARD = (FORMAT, CIPHER, KEY_ID, DELETION_POLICY,
            DECRYPT_CONTAINER_FORMAT, DECRYPT_SIZE)
LEGACY = (LEGACY_KEY_ID, LEGACY_DELETION_POLICY)
KEYS = frozenset(STANDARD + LEGACY)
DELETION_POLICIES = ('on_image_deletion', 'do_not_delete')
#: (key id, deletion policy) pairs, standard first.
KEY_PAIRS = ((KEY_ID, DELETION_POLICY),
             (LEGACY_KEY_ID, LEGACY_DELETION_POLICY))
#: What decides how the image's bytes are read: fixed once it has data.
FIXED_WITH_DATA = (KEY_ID, FORMAT, LEGACY_KEY_ID)


def keys_of(values: Mapping[str, str]
            ) -> dict[str, tuple[str, str | None]]:
    """The secrets an image's values name, by key property, each with
    its own deletion policy (an image may name one in each pair)."""
    return {key_id: (values[key_id], values.get(policy))
            for key_id, policy in KEY_PAIRS if values.get(key_id)}


def problems(values: Mapping[str, str], formats: list[str]) -> list[str]:
    """Why ``values`` cannot be stored, one sentence each (empty: valid)."""
    found: list[str] = []
    for key in (KEY_ID, LEGACY_KEY_ID):
        value = values.get(key)
        if value is not None and not uuids.is_uuid(value):
            found.append(f"Invalid value for property '{key}': '{value}' "
                         'is not a UUID.')
    for key in (DELETION_POLICY, LEGACY_DELETION_POLICY):
        value = values.get(key)
        if value is not None and value not in DELETION_POLICIES:
            found.append(f"Invalid value for property '{key}': '{value}' "
                         f"is not one of {', '.join(DELETION_POLICIES)}.")
    value = values.get(FORMAT)
    if value is not None and value not in formats:
        found.append(f"Invalid value for property '{FORMAT}': '{value}' "
                     f"is not one of {', '.join(formats)}.")
    value = values.get(DECRYPT_SIZE)
    if value is not None and not (value.isascii() and value.isdigit()):
        found.append(f"Invalid value for property '{DECRYPT_SIZE}': "
                     f"'{value}' is not a non-negative integer.")
    standard = [key for key in STANDARD if key in values]
    for required in (KEY_ID, FORMAT) if standard else ():
        if required not in values:
            other = next(key for key in standard if key != required)
            found.append(f"Property '{required}' is required with "
                         f"'{other}': an encrypted image needs both a key "
                         'and a format.')
    if LEGACY_DELETION_POLICY in values and LEGACY_KEY_ID not in values:
        found.append(f"Property '{LEGACY_KEY_ID}' is required with "
                     f"'{LEGACY_DELETION_POLICY}'.")
    return found
