"""The architecture holds (DESIGN.md, Layers): every import between dmlkit's subpackages goes to
the same layer or below, and no two modules import each other, directly or around a loop.
Lazy imports inside functions count too: they form the same cycles at run time."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "dmlkit"
# top to bottom; a subpackage may import its own layer or any layer below it
LAYERS = [
    {"__main__", "__init__"},
    {"cli"},
    {"protocol"},
    {"serve"},
    {"engine"},
    {"methods"},
    {"losses", "miners", "models", "evaluation", "data"},
    {"base", "config", "safe_yaml", "errors", "version", "presets"},
]
RANK = {name: depth for depth, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """dmlkit modules ``path`` imports (``from a import b`` counts as ``a.b`` where that is a
    module, else ``a``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "dmlkit"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "dmlkit":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}
GRAPH = {m: imports(p) & MODULES.keys() for m, p in MODULES.items()}


def subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_subpackage_has_a_layer():
    assert {subpackage(m) for m in MODULES} <= RANK.keys()


def test_imports_go_to_the_same_layer_or_below():
    upward = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets
                    if RANK[subpackage(t)] < RANK[subpackage(m)])
    assert not upward, "upward imports:\n" + "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each a list of nodes."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_subpackages():
    packages: dict[str, set[str]] = {}
    for m, targets in GRAPH.items():
        packages.setdefault(subpackage(m), set()).update(
            subpackage(t) for t in targets if subpackage(t) != subpackage(m))
    assert _cycles(packages) == []


def test_no_import_cycle_between_modules():
    # a package's __init__ importing its own modules is not a cycle of concepts
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in GRAPH.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
