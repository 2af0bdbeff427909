"""``tox.ini`` runs what ``./tools/dev test`` (the CI command) runs."""

from __future__ import annotations

import configparser
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _joined(text: str) -> str:
    """Lines continued with a backslash joined, whitespace collapsed."""
    return re.sub(r'\s+', ' ', text.replace('\\\n', ' '))


@pytest.fixture(scope='module')
def tox() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read(ROOT / 'tox.ini', encoding='utf-8')
    return parser


def _commands(tox: configparser.RawConfigParser, env: str) -> list[str]:
    """The commands of ``env`` (``''``: the base ``[testenv]``)."""
    raw = tox.get(f'testenv:{env}' if env else 'testenv', 'commands')
    return [_joined(line).strip()
            for line in raw.replace('\\\n', ' ').strip().splitlines()]


def test_environments(tox: configparser.RawConfigParser) -> None:
    assert {'testenv:functional', 'testenv:pep8', 'testenv:docs',
            'testenv:releasenotes'} <= set(tox.sections())
    assert tox.get('tox', 'envlist').split(',')[0] == 'py3'


@pytest.mark.parametrize('env', ['pep8', 'docs', 'releasenotes'])
def test_commands_are_those_of_tools_dev(
        tox: configparser.RawConfigParser, env: str) -> None:
    dev = _joined((ROOT / 'tools' / 'dev').read_text(encoding='utf-8'))
    commands = _commands(tox, env)
    assert commands
    for command in commands:
        assert command in dev, command


def test_tests_split_into_py3_and_functional(
        tox: configparser.RawConfigParser) -> None:
    dev = _joined((ROOT / 'tools' / 'dev').read_text(encoding='utf-8'))
    assert 'python -m pytest -p no:cacheprovider' in dev
    assert _commands(tox, '') == [
        'python -m pytest -p no:cacheprovider -m "not functional" '
        '{posargs}']
    assert _commands(tox, 'functional') == [
        'python -m pytest -p no:cacheprovider -m functional {posargs}']
    assert '-c{toxinidir}/upper-constraints.txt' in tox.get('testenv',
                                                            'deps')
