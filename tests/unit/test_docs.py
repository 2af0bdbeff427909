"""The documentation says what the code and the shipped files are.

Each check reads a page and the thing it describes, so a module, option
group, command-line option or paste line added without its documentation
fails here.
"""

from __future__ import annotations

import argparse
import configparser
import pathlib
import re

from instance_aware import opts
from tests import docsnippets
from tests.local import serve

PACKAGE = docsnippets.ROOT / 'instance_aware'
DEV_TOOLING = docsnippets.ROOT / 'tests' / 'local'
README = docsnippets.ROOT / 'README.rst'
CONTRIBUTOR = docsnippets.DOC / 'contributor' / 'index.rst'


def _layout_paths(root: str = 'instance_aware/') -> set[str]:
    """Paths under ``root`` named by the contributor page."""
    text = CONTRIBUTOR.read_text(encoding='utf-8')
    block = text.split('.. code-block:: none\n\n', 1)[1]
    stack: list[str] = []
    paths: set[str] = set()
    for line in block.splitlines():
        if line and not line.startswith('   '):
            break  # end of the code block
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip()) - 3
        if indent % 2:
            continue  # a wrapped description
        name = line.split()[0]
        stack[indent // 2:] = [name]
        paths.add(''.join(stack))
    return {path[len(root):] for path in paths
            if path.startswith(root) and path != root}


def _package_paths(package: pathlib.Path = PACKAGE) -> set[str]:
    found = set()
    for path in package.rglob('*'):
        relative = path.relative_to(package)
        if '__pycache__' in relative.parts or 'versions' in relative.parts[
                :-1]:
            continue
        if path.is_dir():
            found.add(f'{relative.as_posix()}/')
        elif (path.suffix == '.py' and path.name != '__init__.py'
              and relative.parent.name != 'versions'):
            found.add(relative.as_posix())
    return found


def test_contributor_layout_names_every_module_and_package() -> None:
    documented, actual = _layout_paths(), _package_paths()
    assert not actual - documented, (
        f'add to the layout of {CONTRIBUTOR.name}: '
        f'{sorted(actual - documented)}')
    assert not documented - actual, (
        f'no longer in the tree: {sorted(documented - actual)}')


def test_contributor_layout_names_every_dev_tooling_module() -> None:
    documented = _layout_paths('tests/local/')
    actual = _package_paths(DEV_TOOLING)
    assert documented == actual, (
        f'add: {sorted(actual - documented)}; '
        f'gone: {sorted(documented - actual)}')


def test_contributor_page_counts_the_filters_of_the_stack() -> None:
    text = CONTRIBUTOR.read_text(encoding='utf-8')
    assert 'the three' not in text
    assert 'filter instance_aware (the four filters, in order)' in text


def test_configuration_reference_describes_every_option_group() -> None:
    page = (docsnippets.DOC / 'configuration' / 'config.rst').read_text(
        encoding='utf-8')
    index = (docsnippets.DOC / 'configuration' / 'index.rst').read_text(
        encoding='utf-8')
    groups = [group for group, _opts in opts.list_opts()]
    assert len(groups) == 4, groups
    for group in groups:
        assert f'``[{group}]``' in page, group
        assert f'``[{group}]``' in index, group


def _serve_options() -> set[str]:
    parser = serve.build_parser()
    commands = next(action for action in parser._actions
                    if isinstance(action, argparse._SubParsersAction))
    options = {option for action in commands.choices['serve']._actions
               for option in action.option_strings
               if option.startswith('--')}
    options.discard('--help')
    return options


def test_readme_names_every_serve_option() -> None:
    options = _serve_options()
    text = README.read_text(encoding='utf-8')
    missing = sorted(option for option in options if not re.search(
        rf'``[^`]*{re.escape(option)}\b', text))
    assert not missing, f'README.rst does not name {missing}'


def test_contributor_page_documents_every_serve_option() -> None:
    """The ``tools/dev serve`` section: its synopsis (first ``console``
    block) and its option list name exactly the parser's options."""
    text = CONTRIBUTOR.read_text(encoding='utf-8')
    body = re.split(r'^tools/dev serve\n=+\n', text, flags=re.MULTILINE)[1]
    body = re.split(r'^\S.*\n=+\n', body, flags=re.MULTILINE)[0]
    block = body.split('.. code-block:: console\n', 1)[1]
    synopsis = []
    for line in block.splitlines()[1:]:
        if line.strip() and not line.startswith('   '):
            break
        synopsis.append(line)
    option = re.compile(r'(?<![\w-])--[a-z][a-z-]*')
    assert set(option.findall('\n'.join(synopsis))) == _serve_options()
    described = set(re.findall(r'^``(--[a-z-]+)', body, re.MULTILINE))
    assert described == _serve_options()


def test_readme_paste_snippet_is_etc_paste_ini() -> None:
    text = README.read_text(encoding='utf-8')
    snippet = re.search(r'\n( +)\[composite:api\]\n((?:\1.*\n)+)', text)
    assert snippet, 'README lost its [composite:api] snippet'
    documented = dict(line.strip().split(' = ', 1)
                      for line in snippet.group(2).splitlines())
    paste = configparser.RawConfigParser()
    paste.optionxform = str  # type: ignore[assignment,method-assign]
    paste.read(docsnippets.ETC / 'paste.ini', encoding='utf-8')
    assert documented == dict(paste['composite:api'])
    for section in ('filter:instance_aware',):
        factory = paste[section]['paste.filter_factory']
        assert f'[{section}]\n' in text
        assert f'paste.filter_factory = {factory}' in text


def test_readme_mysql_url_names_its_extra() -> None:
    text = README.read_text(encoding='utf-8')
    before = text.split('mysql+pymysql://', 1)[0]
    assert "'instance-aware[mysql]'" in before


def test_docs_are_not_a_diary() -> None:
    diary = re.compile(
        r'(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|'
        r'tenth|[0-9]+th|this|previous|earlier) sessions?\b|sessions of',
        re.IGNORECASE)
    pages = [README, *docsnippets.DOC.rglob('*.rst')]
    found = [f'{page.name}: {match.group(0)}' for page in pages
             for match in diary.finditer(page.read_text(encoding='utf-8'))]
    assert not found, found


def test_install_guide_includes_the_shipped_files() -> None:
    text = docsnippets.INSTALL_GUIDE.read_text(encoding='utf-8')
    for name in ('paste.ini', 'glance-api.conf.sample', 'glance-api.service',
                 'glance-api-uwsgi.ini'):
        assert f'.. literalinclude:: ../../../etc/{name}\n' in text, name
        assert (docsnippets.ETC / name).is_file(), name


def test_layout_reader_sees_nested_paths() -> None:
    paths = _layout_paths()
    assert 'filters/stack.py' in paths
    assert 'store/migrations/env.py' in paths
    assert pathlib.PurePosixPath('keys/opts.py').as_posix() in paths
