"""The state directory each local server keeps everything in, and the INI
files written there."""

from __future__ import annotations

import configparser
import dataclasses
import os
from collections.abc import Callable, Mapping


@dataclasses.dataclass(frozen=True)
class StateDir:
    """One server's directory; paths are absolute.  Subclasses name the
    files of their server (Glance, Keystone, Barbican)."""

    path: str

    def __post_init__(self) -> None:
        object.__setattr__(self, 'path', os.path.abspath(self.path))

    def join(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    @property
    def log_file(self) -> str:
        """gunicorn's and the server's output (appended across starts)."""
        return self.join('server.log')


def write_ini(path: str, sections: Mapping[str, Mapping[str, str]],
              header: str = '') -> None:
    """Write an INI file of ``sections`` (``DEFAULT`` included), keys
    kept in their case, values literal (no interpolation), after
    ``header`` (comment lines)."""
    parser = configparser.RawConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    for name, values in sections.items():
        if name != 'DEFAULT':
            parser.add_section(name)
        for key, value in values.items():
            parser.set(name, key, value)
    with open(path, 'w', encoding='utf-8') as stream:
        stream.write(header)
        parser.write(stream)


def secret_file(path: str, make: Callable[[], str]) -> str:
    """The secret kept in ``path`` (mode 0600), made by ``make`` the first
    time: a state directory keeps its passwords and keys across runs."""
    try:
        with open(path, encoding='ascii') as stream:
            return stream.read().strip()
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'w', encoding='ascii') as stream:
        stream.write(value + '\n')
    return value
