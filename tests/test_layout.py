"""The house's architecture: the library (`lumina`) never imports the research code (`lumina_research`), and no
project modules import each other in a circle.

Every import counts, function-local ones too (they run as soon as the function does). Imports under
`if TYPE_CHECKING:` never run, but a circle through them is still two modules that need each other (the usual sign
that a type lives in the wrong one), so cycles are checked with them too. A package's `__init__` importing its own
submodules is not an edge: a lazy-export package does that, and it cannot close a circle unless a submodule imports
the package back, which is an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lumina", "lumina_research")
# Cycles left in code that is being rewritten elsewhere (the app); a new cycle is fixed in the code, not listed here.
KNOWN_CYCLES: Set[frozenset] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> Dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> Set[int]:
    """ids of the nodes under `if TYPE_CHECKING:` (annotations only; such imports never run)."""
    skipped: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def imported_names(name: str, path: Path, annotations: bool = False) -> Set[str]:
    """Every dotted name `name` imports, absolute (`from X import y` gives X.y: the module X.y, or a name in X);
    with `annotations`, those under `if TYPE_CHECKING:` too."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = set() if annotations else _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: Set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            out.update(source if alias.name == "*" else f"{source}.{alias.name}" for alias in node.names)
    return out


def import_graph(annotations: bool = False) -> Dict[str, Set[str]]:
    """module -> the project modules it imports (a name resolves to the longest project module it starts with);
    with `annotations`, the imports under `if TYPE_CHECKING:` too."""
    modules = project_modules()
    graph: Dict[str, Set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(name, path, annotations):
            parts = imported.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            target = ".".join(parts)
            if not target or target == name:
                continue
            if path.name == "__init__.py" and target.startswith(name + "."):
                continue  # a package exporting its own submodules
            targets.add(target)
        graph[name] = targets
    return graph


def strongly_connected(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Tarjan's components with more than one module: the import cycles."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _edges_into_research(prefix: str) -> List[str]:
    graph = import_graph()
    return sorted(f"{a} -> {b}" for a, targets in graph.items() if a == prefix or a.startswith(prefix + ".")
                  for b in targets if b == "lumina_research" or b.startswith("lumina_research."))


def test_the_library_never_imports_research_code():
    edges = _edges_into_research("lumina")
    assert not edges, "the library imports research code:\n  " + "\n  ".join(edges)


def test_the_app_never_imports_research_code():
    edges = _edges_into_research("lumina.app")
    assert not edges, "the app imports research code:\n  " + "\n  ".join(edges)


def test_no_import_cycles():
    cycles = [c for c in strongly_connected(import_graph()) if frozenset(c) not in KNOWN_CYCLES]
    assert not cycles, "import cycles among project modules:\n  " + "\n  ".join(" <-> ".join(c) for c in cycles)


def test_no_import_cycles_through_type_checking_imports():
    cycles = [c for c in strongly_connected(import_graph(annotations=True)) if frozenset(c) not in KNOWN_CYCLES]
    assert not cycles, "import cycles among project modules (counting imports under TYPE_CHECKING):\n  " + \
        "\n  ".join(" <-> ".join(c) for c in cycles)


def test_the_graph_sees_function_local_and_relative_imports():
    """The checks above are only as good as the graph: a function-local absolute import, a relative one and a
    package's lazy exports are all read."""
    graph = import_graph()
    assert "lumina.models.components" in graph["lumina.v2a.loading"]  # function-local, inside load_v2a
    assert "lumina_research.world.captions" in graph["lumina_research.world.render"]  # relative
    # an import under TYPE_CHECKING is an edge of the annotations graph only
    typed = "lumina.pipelines.pipeline_lumina_video"
    assert typed not in graph["lumina.generation"] and typed in import_graph(annotations=True)["lumina.generation"]
    assert "lumina_research.world.render" not in graph["lumina_research.world"]  # a package's own submodule
    assert "lumina.models.components" in graph["lumina_research.train.assemble"]
