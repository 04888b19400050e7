"""The import graph of the whole package: data flows one way, and no module imports itself back.

Every module of moelens (the package and the ``hooks``, ``kernels``, ``store`` and ``web``
folders installed under it) is parsed; every import counts, also the ones inside functions (a
function-level import is still a dependency, it only hides a cycle). Two rules:

* layering: a module imports only packages its layer may use (model -> hooks -> kernels -> store
  -> analysis -> presentation; the pipeline wires capture to storage and sits beside analysis;
  ``moelens.capture``'s notebook object is presentation over the capture stack, as ``moelens.open``'s
  is over analysis);
* no cycles between modules (Tarjan's strongly connected components over the module graph).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"moelens": ROOT / "moelens", "moelens.hooks": ROOT / "hooks", "moelens.kernels": ROOT / "kernels",
           "moelens.store": ROOT / "store", "moelens.web": ROOT / "web"}

BASE = {"moelens", "moelens._version", "moelens.errors", "moelens.config", "moelens.progress",
        "moelens.tokentext", "moelens.hub"}  # the stored form of token text: pure, imports nothing; the pipeline writes it, viz reads it;
        # moelens.hub: stdlib-only hub probe and "did you mean" that models and data share
# layer -> the layers its modules may import (besides BASE and their own)
MAY_IMPORT = {
    "base": set(),
    "models": {"embedded"},
    "embedded": set(),
    "data": set(),
    "hooks": {"models"},
    "kernels": {"hooks", "models"},
    "store": set(),
    "pipeline": {"models", "embedded", "data", "hooks", "kernels", "store"},
    "analysis": {"store"},
    # causal experiments: run the model (models, hooks, pipeline), store effects, rank candidates with analysis
    "interventions": {"models", "embedded", "data", "hooks", "kernels", "store", "pipeline", "analysis"},
    "viz": {"store", "analysis", "web"},
    "web": set(),
    "notebook": {"models", "hooks", "kernels", "store", "pipeline", "analysis", "viz", "interventions"},
    "cli": {"models", "embedded", "data", "hooks", "kernels", "store", "pipeline", "analysis", "viz", "web",
            "notebook", "interventions"},
}
# module prefix -> layer (longest prefix wins)
LAYER_OF = {
    "moelens.models": "models", "moelens.embedded": "embedded", "moelens.data": "data",
    "moelens.hooks": "hooks", "moelens.kernels": "kernels", "moelens.store": "store",
    "moelens.pipeline": "pipeline", "moelens.tracing": "pipeline", "moelens.capturing": "notebook",
    "moelens.sources": "pipeline", "moelens.placements": "viz", "moelens.interventions": "interventions",
    "moelens.analysis": "analysis", "moelens.viz": "viz", "moelens.web": "web", "moelens.cli": "cli",
    "moelens.__main__": "cli",
}


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if package == "moelens" and parts and parts[0] in ("hooks", "kernels", "store", "web"):
                continue
            out[".".join([package, *parts])] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import submodule` depends on the submodule; `from pkg import name` on pkg
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # moelens.store.Store -> moelens.store
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _layer(module: str) -> str:
    if module in BASE:
        return "base"
    best = max((p for p in LAYER_OF if module == p or module.startswith(p + ".")), key=len, default=None)
    assert best is not None, f"{module} belongs to no layer: add it to LAYER_OF"
    return LAYER_OF[best]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def test_every_module_is_in_a_layer_and_imports_only_lower_ones():
    violations = []
    for module, targets in sorted(_graph().items()):
        layer = _layer(module)
        allowed = MAY_IMPORT[layer] | {layer, "base"}
        for target in sorted(targets):
            if module == "moelens" and target.startswith("moelens."):
                continue  # the package's lazy re-exports (TYPE_CHECKING only)
            if _layer(target) not in allowed:
                violations.append(f"{module} ({layer}) imports {target} ({_layer(target)})")
    assert not violations, "\n".join(violations)


def test_no_import_cycles():
    graph = _graph()
    graph["moelens"] = set()  # lazy re-exports resolve at attribute access, after every import
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strongconnect(w)
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
                cycles.append(sorted(component))

    import sys

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_graph_sees_function_level_imports():
    """The test itself: an import inside a function body is an edge."""
    graph = _graph()
    assert "moelens.pipeline.run" in graph["moelens.tracing"]  # imported inside trace()
