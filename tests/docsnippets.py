"""Read the commands and files the documentation shows, to run them.

The deployer guide keeps its shell commands in ``.. code-block:: console``
blocks, one command per ``$ `` line, and its sample files in ``etc/``
(shown with ``literalinclude``).  Tests take both from there, so what an
operator copies is what the tests ran.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import shlex

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / 'doc' / 'source'
ETC = ROOT / 'etc'
INSTALL_GUIDE = DOC / 'install' / 'index.rst'

_ASSIGNMENT = re.compile(r'^[A-Z_][A-Z0-9_]*=')


@dataclasses.dataclass(frozen=True)
class Command:
    """One ``$ `` line: environment assignments, then the argument list."""

    env: dict[str, str]
    argv: list[str]
    line: str

    @property
    def program(self) -> str:
        return self.argv[0]


def code_blocks(path: pathlib.Path, language: str) -> list[list[str]]:
    """The dedented lines of every ``code-block:: language`` in ``path``.

    A block is the lines indented deeper than its directive (the
    directive may itself sit in a list or a definition).
    """
    lines = path.read_text(encoding='utf-8').splitlines()
    blocks: list[list[str]] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if line.strip() != f'.. code-block:: {language}':
            continue
        indent = len(line) - len(line.lstrip())
        block: list[str] = []
        while index < len(lines) and (
                not lines[index].strip()
                or len(lines[index]) - len(lines[index].lstrip()) > indent):
            block.append(lines[index].strip())
            index += 1
        blocks.append([text for text in block if text])
    return blocks


def console_blocks(path: pathlib.Path) -> list[list[str]]:
    """The lines of every ``code-block:: console`` in ``path``."""
    return code_blocks(path, 'console')


def parse_command(line: str) -> Command:
    """Split a ``$ `` line; a trailing ``# comment`` is dropped."""
    words = shlex.split(line[2:], comments=True)
    env: dict[str, str] = {}
    while words and _ASSIGNMENT.match(words[0]):
        key, value = words.pop(0).split('=', 1)
        env[key] = value
    return Command(env=env, argv=words, line=line)


def commands(path: pathlib.Path = INSTALL_GUIDE) -> list[Command]:
    """Every documented command of ``path``, in page order."""
    found = []
    for block in console_blocks(path):
        for line in block:
            if not line.startswith('$ '):
                raise ValueError(f'{path.name}: console line without a '
                                 f'"$ " prompt: {line!r}')
            found.append(parse_command(line))
    return found


def option_value(argv: list[str], option: str) -> str:
    """The value of ``--option VALUE`` in ``argv``."""
    return argv[argv.index(option) + 1]
