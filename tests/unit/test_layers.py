"""The package map of the contributor guide, checked against the imports.

Each package of ``instance_aware`` may import only the packages the map
(doc/source/contributor/map.rst) says it may; no module imports itself back
through others.  Imports under ``if TYPE_CHECKING:`` do not count: they
never run.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / 'instance_aware'
MAP = ROOT / 'doc' / 'source' / 'contributor' / 'map.rst'

#: What each unit may import (besides itself).  A unit is a package of
#: instance_aware, or a top-level module; ``filters.base`` (the framework
#: every filter subclasses) is a unit of its own, below the concrete
#: filters that compose the others.
ALLOWED: dict[str, set[str]] = {
    'version': set(),
    'config': set(),
    'uuids': set(),
    'policies': set(),
    'http': {'policies'},
    'store': {'uuids'},
    'database': {'config', 'store'},
    'keys': {'config', 'store', 'uuids'},
    'api': {'http', 'policies', 'store', 'uuids'},
    'integrity': {'http', 'store'},
    'filters.base': {'config', 'database', 'http', 'policies', 'store'},
    'capture': {'filters.base', 'http', 'policies', 'store', 'uuids'},
    'filters': {'api', 'capture', 'config', 'database', 'filters.base',
                'http', 'integrity', 'keys', 'policies', 'store', 'uuids'},
    'proxy': {'config', 'filters', 'filters.base', 'http'},
    'healthcheck': {'config', 'database', 'store'},
    'cmd': {'api', 'capture', 'config', 'database', 'filters',
            'filters.base', 'http', 'integrity', 'keys', 'policies',
            'store', 'uuids', 'version'},
    'opts': {'cmd', 'config', 'keys', 'proxy'},
}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix('').parts
    name = '.'.join(parts)
    return name.removesuffix('.__init__')


def _unit(module: str) -> str:
    parts = module.split('.')[1:]
    if not parts:
        return '(package)'
    if parts[:2] == ['filters', 'base']:
        return 'filters.base'
    return parts[0]


def _runtime_imports(tree: ast.Module) -> list[str]:
    """Names of instance_aware modules imported outside TYPE_CHECKING."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and 'TYPE_CHECKING' in ast.unparse(
                node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and (
                node.module.split('.')[0] == 'instance_aware'):
            for alias in node.names:
                candidate = f'{node.module}.{alias.name}'
                found.append(candidate if _exists(candidate)
                             else node.module)
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names
                         if a.name.split('.')[0] == 'instance_aware')
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split('.'))
    return path.with_suffix('.py').exists() or (path / '__init__.py').exists()


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob('*.py')):
        if 'versions' in path.parts:
            continue
        graph[_module_name(path)] = set(
            _runtime_imports(ast.parse(path.read_text())))
    return graph


GRAPH = _graph()


@pytest.mark.parametrize('module', sorted(GRAPH))
def test_imports_follow_the_map(module: str) -> None:
    unit = _unit(module)
    if unit == '(package)':
        return
    assert unit in ALLOWED, f'{unit} is not in the map: add it'
    wrong = sorted(f'{target} ({_unit(target)})'
                   for target in GRAPH[module]
                   if _unit(target) not in ALLOWED[unit] | {unit})
    assert not wrong, f'{module} may not import {wrong}'


def test_no_import_cycle() -> None:
    """Tarjan's strongly connected components over the module graph."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH.get(node, ()):
            if target not in GRAPH or target == node:
                continue
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            # A package importing its own modules is not a cycle.
            members = [m for m in component
                       if not any(o != m and o.startswith(m + '.')
                                  for o in component)]
            if len(members) > 1:
                cycles.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            connect(node)
    assert not cycles, f'import cycles: {cycles}'


def test_the_map_names_every_unit() -> None:
    text = MAP.read_text()
    missing = sorted(unit for unit in ALLOWED
                     if f'``{unit.replace(".", "/")}' not in text
                     and f'``{unit}' not in text)
    assert not missing, f'{MAP.name} does not describe {missing}'
