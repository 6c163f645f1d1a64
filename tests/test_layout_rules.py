"""The architecture, checked from the source: no import cycles among clipstore's modules, and who may import whom.

Every import counts: module level, inside functions and under `if TYPE_CHECKING:` (a type-only import of `Store`
is still feature code reaching for the facade). `cli/` and `migrations/` are read as `clipstore.cli` and
`clipstore.migrations`, the names pyproject.toml installs them under. Implicit imports of parent packages are not
edges (every module would then be in a cycle with `clipstore/__init__.py`); explicit `import clipstore` is.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = {"clipstore": REPO / "clipstore", "clipstore.cli": REPO / "cli", "clipstore.migrations": REPO / "migrations"}
FEATURES = ("ingest", "search", "prompts", "describe", "finetune", "switch", "training", "world")
FOUNDATION = ("clipstore.db", "clipstore.encoders", "clipstore.errors", "clipstore.results", "clipstore.progress", "clipstore.paths", "clipstore.imaging")


def _module_files() -> dict[str, Path]:
    modules = {}
    for prefix, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((prefix, *parts))] = path
    return modules


def _dynamic_imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """What the `import_module` calls load, which the `ast` walk cannot see: declared here, checked below."""
    init = ast.parse(modules["clipstore"].read_text(encoding="utf-8"))
    lazy = next(node.value for node in init.body if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "_LAZY_MODULES")
    return {
        "clipstore": {f"clipstore.{name}" for name in ast.literal_eval(lazy)},  # PEP 562 `__getattr__`
        "clipstore.db.migrate": {name for name in modules if name.startswith("clipstore.migrations.")},
    }


def _imported_names(name: str, path: Path) -> tuple[set[str], bool]:
    """Dotted names `name` imports anywhere in its file, and whether it calls import_module/__import__."""
    names, dynamic = set(), False
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".rstrip(".")
            names |= {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Call):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            dynamic = dynamic or called in ("import_module", "__import__")
    return names, dynamic


@lru_cache(maxsize=1)
def import_graph() -> dict[str, frozenset[str]]:
    """clipstore module -> the clipstore modules it imports (a name that is not a module counts as its module)."""
    modules = _module_files()
    dynamic = _dynamic_imports(modules)
    graph = {}
    for name, path in modules.items():
        imported, calls_import_module = _imported_names(name, path)
        assert not calls_import_module or name in dynamic, f"{name} imports dynamically: declare what in _dynamic_imports"
        edges = set(dynamic.get(name, ()))
        for target in imported:
            while target and target not in modules:  # `from clipstore.db import layout` names a module; `... import X` not
                target = target.rpartition(".")[0]
            edges.add(target)
        graph[name] = frozenset(edges - {"", name})
    return graph


def find_cycle(graph: dict[str, frozenset[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None when the graph is acyclic."""
    state: dict[str, str] = {}  # "open" while on the DFS path, "done" once every module below it is checked
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[module] = "done"
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def _importers_of(prefix: str) -> set[str]:
    return {module for module, edges in import_graph().items() if any(t == prefix or t.startswith(prefix + ".") for t in edges)}


def _inside(module: str, *prefixes: str) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def test_the_graph_is_read_from_every_package():
    graph = import_graph()
    assert {f"clipstore.{feature}" for feature in FEATURES} <= set(graph)
    assert "clipstore.db.layout" in graph["clipstore.search.searcher"]  # `from clipstore.db import layout`
    assert "clipstore.store.facade" in graph["clipstore"]  # lazy, under TYPE_CHECKING and through import_module
    assert graph["clipstore.db.migrate"] >= {"clipstore.migrations.0001_create_tables"}


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize(
    "graph, cycle",
    [
        ({"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset()}, None),
        ({"a": frozenset({"b", "c"}), "b": frozenset({"c"}), "c": frozenset()}, None),  # a diamond is no cycle
        ({"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"})}, ["a", "b", "c", "a"]),
        ({"a": frozenset({"b"}), "b": frozenset({"b", "c"}), "c": frozenset()}, ["b", "b"]),
    ],
)
def test_find_cycle_finds_what_is_there_and_nothing_else(graph, cycle):
    assert find_cycle(graph) == cycle


def test_feature_code_never_imports_the_store_facade():
    """Feature code gets a StoreContext (clipstore.db.context), never the Store: only the package's lazy exports, the
    demo, the CLI, the LanceDB plugin and the web server (which, like the CLI, are clients of the Store) import
    clipstore.store."""
    clients = ("clipstore.store", "clipstore.cli", "clipstore.lancedb", "clipstore.serve")
    offenders = {m for m in _importers_of("clipstore.store") if not _inside(m, *clients)}
    assert offenders - {"clipstore", "clipstore.demo"} == set()


def test_the_foundation_imports_no_feature_the_store_or_the_cli():
    higher = ("clipstore.store", "clipstore.demo", "clipstore.cli", *(f"clipstore.{feature}" for feature in FEATURES))
    offenders = {
        module: sorted(t for t in edges if _inside(t, *higher))
        for module, edges in import_graph().items()
        if _inside(module, *FOUNDATION)
    }
    assert {module: targets for module, targets in offenders.items() if targets} == {}


def test_migrations_use_only_the_db_package_and_the_errors():
    """A migration calling live feature code would change what an old migration does when that code changes."""
    for module, edges in import_graph().items():
        if _inside(module, "clipstore.migrations"):
            assert all(_inside(t, "clipstore.db", "clipstore.errors") for t in edges), (module, sorted(edges))


def test_the_library_never_imports_the_cli():
    offenders = {m for m in _importers_of("clipstore.cli") if not _inside(m, "clipstore.cli")}
    assert offenders - {"clipstore.__main__"} == set()


def test_the_library_never_imports_the_lancedb_plugin():
    """clipstore.lancedb plugs clipstore into LanceDB's registry: a layer above the Store, which only the package's
    lazy export of its result (`clipstore.TableDescribeReport`) names."""
    assert "clipstore.lancedb.functions" in import_graph()["clipstore.lancedb"]
    offenders = {m for m in _importers_of("clipstore.lancedb") if not _inside(m, "clipstore.lancedb")}
    assert offenders - {"clipstore"} == set()


def test_only_the_cli_imports_the_web_server():
    """clipstore.serve (FastAPI, uvicorn) sits above the Store like the CLI: the library never imports it; the CLI
    does, and the package's lazy export of its options (`clipstore.ServeOptions`) names it."""
    assert "clipstore.serve.options" in import_graph()["clipstore.cli.serve"]
    offenders = {m for m in _importers_of("clipstore.serve") if not _inside(m, "clipstore.serve", "clipstore.cli")}
    assert offenders - {"clipstore"} == set()
    assert "clipstore.serve.app" not in import_graph()["clipstore.serve"]  # importing the package loads no framework
