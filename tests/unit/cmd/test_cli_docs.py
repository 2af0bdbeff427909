"""``doc/source/cli/index.rst`` documents the options the parsers have.

Each synopsis (the first ``console`` block of a command's section) is
compared with the argparse parser of that command, both ways, so a new
option or a removed one cannot leave the page behind.
"""

from __future__ import annotations

import argparse
import pathlib
import re

import pytest

from instance_aware.cmd import manage
from instance_aware.store import migration

PAGE = (pathlib.Path(__file__).resolve().parents[3] / 'doc' / 'source' /
        'cli' / 'index.rst').read_text(encoding='utf-8')
OPTION = re.compile(r'(?<![\w-])--[a-z][a-z-]*')


def _sections(text: str, underline: str) -> dict[str, str]:
    """Section bodies by title, for titles underlined with ``underline``."""
    parts = re.split(rf'^(.+)\n{re.escape(underline)}+\n', text,
                     flags=re.MULTILINE)
    return {title.strip(): body
            for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def _synopsis(body: str) -> set[str]:
    """Options in the first ``console`` code block of ``body``."""
    block = body.split('.. code-block:: console', 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line.strip() and not line.startswith('   '):
            break
        lines.append(line)
    return set(OPTION.findall('\n'.join(lines)))


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions
            for option in action.option_strings
            if option.startswith('--') and option != '--help'}


def _subparsers(parser: argparse.ArgumentParser
                ) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f'{name} {inner}': parser_ for inner, parser_
                              in _subparsers(sub).items()})
    return found


def _manage_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser()
    manage.add_command_parsers(parser.add_subparsers())
    return _subparsers(parser)


COMMANDS = _sections(PAGE, '=')


def _is_group(parser: argparse.ArgumentParser) -> bool:
    """Whether ``parser`` only groups subcommands (``db``, ``digests``)."""
    return any(isinstance(action, argparse._SubParsersAction)
               for action in parser._actions)


@pytest.mark.parametrize(
    'command', sorted(name for name, parser in _manage_parsers().items()
                      if not _is_group(parser)))
def test_manage_synopses(command: str) -> None:
    parser = _manage_parsers()[command]
    body = _sections(COMMANDS['instance-aware-manage'], '-')[command]
    assert _synopsis(body) == _options(parser)


def test_manage_global_options() -> None:
    body = COMMANDS['instance-aware-manage']
    assert _synopsis(body) == {'--config-file', '--config-dir'}
    documented = set(OPTION.findall(
        _sections(body, '-')['Global options']))
    assert documented == {'--config-file', '--config-dir', '--help',
                          '--version'}


def test_status_synopsis() -> None:
    assert _synopsis(COMMANDS['instance-aware-status']) == {
        '--config-file', '--config-dir', '--json'}


def test_head_revision_is_the_shipped_one() -> None:
    heads = set(re.findall(r'Head revision: (\w+)', PAGE))
    assert heads == {migration.head()}
    assert f'to revision {migration.head()}.' in PAGE
