"""The package's layering, checked on the source: a module imports only from its own layer or a lower one, and no
modules import each other in a circle.

Every import counts, at the top of a file or inside a function (a deferred import is still a dependency: it only
moves the failure to run time), relative imports resolved, and `importlib.import_module("tunelab....")` too.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "tunelab"

# Top-level modules and packages of tunelab by layer; a module may import from its own layer or lower ones.
LAYER_TABLE: tuple[tuple[str, ...], ...] = (
    ("__init__", "errors", "hardware", "allocator", "runs", "jsonl", "formatting"),  # plain helpers, no concepts
    ("config",),  # the recipe schema and its own checks
    ("data",),
    ("model",),
    ("train", "eval"),
    ("export", "serve"),
    # whole workflows and what a person sees
    (
        "workflow",
        "report",
        "chat",
        "preview",
        "recipe",
        "audit",
        "shared_baseline",
        "compare_methods",
        "compare_methods_report",
        "distributed_run",
        "continual",
        "estimate",
        "advise",
        "advice_text",
    ),  # fmt: skip
    ("ui", "cli", "cli_verbs", "cli_support", "cli_plan", "__main__"),  # entry points
)
LAYERS = {name: number for number, names in enumerate(LAYER_TABLE) for name in names}


@dataclass(frozen=True)
class Edge:
    source: str  # tunelab.data.augment
    line: int
    target: str  # the imported module as written, resolved to absolute: tunelab.model.load
    resolved: str | None  # the tunelab module (file) it names, when one does: tunelab.model.load
    dynamic: bool = False  # import_module with a computed name (only its constant prefix is known)

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


FILES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def top_part(module: str) -> str:
    """tunelab.data.audit → data; tunelab → __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def resolve(name: str) -> str | None:
    """The module file an imported name lives in: the longest prefix that is a tunelab module."""
    while name:
        if name in FILES:
            return name
        name = name.rpartition(".")[0]
    return None


def _absolute(node: ast.ImportFrom, module: str, package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _dynamic_name(node: ast.Call) -> tuple[str, bool] | None:
    """The module named by importlib.import_module(...) / __import__(...): (name, computed)."""
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if called not in ("import_module", "__import__") or not node.args:
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value, False
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        return str(arg.values[0].value).rstrip("."), True
    return None


def imports_of(path: Path) -> list[Edge]:
    return imports_in(path.read_text(encoding="utf-8"), module_name(path), is_package(path), str(path))


def imports_in(source: str, module: str, package: bool = False, filename: str = "<source>") -> list[Edge]:
    """The tunelab imports of one module's source, in line order."""
    edges = []
    for node in ast.walk(ast.parse(source, filename)):
        found: list[tuple[str, bool]] = []
        if isinstance(node, ast.Import):
            found = [(alias.name, False) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, package)
            # `from tunelab.data import audit` imports the module tunelab.data.audit, not only the package
            found = [(f"{base}.{a.name}" if f"{base}.{a.name}" in FILES else base, False) for a in node.names]
        elif isinstance(node, ast.Call) and (dynamic := _dynamic_name(node)):
            found = [dynamic]
        for target, computed in dict.fromkeys(found):
            if target == "tunelab" or target.startswith("tunelab."):
                edges.append(Edge(module, node.lineno, target, resolve(target), computed))
    return sorted(edges, key=lambda edge: edge.line)


EDGES = [edge for path in FILES.values() for edge in imports_of(path)]


def test_every_top_level_module_has_a_layer():
    unknown = sorted({top_part(name) for name in FILES} - set(LAYERS))
    assert not unknown, (
        f"tunelab has top-level modules or packages with no layer: {', '.join(unknown)}. Add each to LAYER_TABLE in "
        f"{Path(__file__).name}, in the lowest layer whose imports it needs (and no lower than what imports it)"
    )


def test_imports_only_go_down_the_layers():
    upward = [
        edge
        for edge in EDGES
        if top_part(edge.source) in LAYERS
        and top_part(edge.target) in LAYERS
        and LAYERS[top_part(edge.target)] > LAYERS[top_part(edge.source)]
    ]
    layers = "\n".join(f"  {number}: {', '.join(names)}" for number, names in enumerate(LAYER_TABLE))
    listed = [f"  {edge}  ({top_part(edge.source)} → {top_part(edge.target)})" for edge in sorted(upward, key=str)]
    assert not upward, (
        f"{len(upward)} imports go up the layers (a module may import only from its own layer or a lower one):\n"
        + "\n".join(listed)
        + f"\nlayers, lowest first:\n{layers}\nmove the code to the layer it belongs to, or pass what it needs in"
    )


def module_graph() -> dict[str, dict[str, Edge]]:
    """module → {imported module: the first import of it}; a package's __init__ importing its own submodules is left
    out (that is how a package exposes its parts), and so are imports whose name is computed."""
    graph: dict[str, dict[str, Edge]] = {name: {} for name in FILES}
    for edge in EDGES:
        target = edge.resolved
        if target is None or target == edge.source or edge.dynamic:
            continue
        if is_package(FILES[edge.source]) and target.startswith(edge.source + "."):
            continue
        graph[edge.source].setdefault(target, edge)
    return graph


def strongly_connected(graph: dict[str, dict[str, Edge]]) -> list[list[str]]:
    """The strongly connected components with more than one module, each sorted (networkx, which torch brings)."""
    import networkx

    components = networkx.strongly_connected_components(
        networkx.DiGraph({node: list(edges) for node, edges in graph.items()})
    )
    return sorted(sorted(component) for component in components if len(component) > 1)


def test_no_import_cycles():
    graph = module_graph()
    cycles = strongly_connected(graph)
    described = []
    for component in cycles:
        inside = [str(edge) for source in component for target, edge in sorted(graph[source].items())
                  if target in component]  # fmt: skip
        described.append(f"  {' ↔ '.join(component)}:\n" + "\n".join(f"    {line}" for line in inside))
    assert not cycles, (
        f"{len(cycles)} groups of modules import each other in a circle:\n" + "\n".join(described) + "\n"
        "move what both need into a module both import (or that one of them imports), so the imports go one way"
    )


def test_the_checker_sees_imports_at_any_depth_and_resolves_relative_ones():
    """The rules are only as good as the import finder: deferred, relative, `from package import module`, dynamic."""
    source = (
        "import tunelab.errors\n"
        "def late():\n"
        "    from tunelab.model.load import load_model\n"
        "    from . import dedup\n"
        "    from ..eval import metrics\n"
        "    import importlib\n"
        "    importlib.import_module('tunelab.serve.app')\n"
        "    importlib.import_module(f'tunelab.ui.{late}')\n"
        "from tunelab import __version__\n"
    )
    edges = [(e.line, e.target, e.resolved, e.dynamic) for e in imports_in(source, "tunelab.data.probe")]
    assert edges == [
        (1, "tunelab.errors", "tunelab.errors", False),
        (3, "tunelab.model.load", "tunelab.model.load", False),
        (4, "tunelab.data.dedup", "tunelab.data.dedup", False),
        (5, "tunelab.eval.metrics", "tunelab.eval.metrics", False),
        (7, "tunelab.serve.app", "tunelab.serve.app", False),
        (8, "tunelab.ui", "tunelab.ui", True),
        (9, "tunelab", "tunelab", False),
    ]
    package = imports_in("from .audit import audit_sets\nfrom .. import runs\n", "tunelab.data", package=True)
    assert [e.target for e in package] == ["tunelab.data.audit", "tunelab.runs"]
