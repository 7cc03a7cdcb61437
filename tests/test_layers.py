"""The import rule of the README's Architecture section, enforced: layers point one way, no cycles.

Every ``import`` in the shipped packages counts, also those inside functions (a lazy import is a
dependency all the same; laziness only defers it). Imports under ``if TYPE_CHECKING:`` count for
the layering (a type from a higher layer is still a dependency on it) but not for cycles (they
never run).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The layers. The first five are the card's top-level folders, imported as ``agentir.<name>``
#: (``agentir/<name>`` links to ``<name>/``); ``agentir`` is the rest of the agentir package.
LAYERS = ("bus", "kernels", "toolbox", "agent_policies", "actors")
PACKAGES = (*LAYERS, "agentir")

#: Which of our packages each package may import (besides itself). ``bus`` and ``kernels`` are
#: the base: they import nothing of ours. ``toolbox`` (tools, synthesis, metrics) may use
#: kernels; policies decide with tools' facts and speak the bus's types; actors carry policies
#: out on the bus; ``agentir`` wires everything, and nothing imports it.
ALLOWED: dict[str, set[str]] = {
    "bus": set(),
    "kernels": set(),
    "toolbox": {"kernels"},
    "agent_policies": {"bus", "kernels", "toolbox"},
    "actors": {"bus", "kernels", "toolbox", "agent_policies"},
    "agentir": {"bus", "kernels", "toolbox", "agent_policies", "actors"},
}


def _module_name(path: Path) -> str:
    """The import name of a source file: ``actors/executor.py`` is ``agentir.actors.executor``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts[0] in LAYERS:
        parts.insert(0, "agentir")
    return ".".join(parts)


def _layer(module: str) -> str:
    """``agentir.actors.executor`` -> ``actors``; ``agentir.cli`` -> ``agentir``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "agentir" and parts[1] in LAYERS else parts[0]


def _source_files() -> list[Path]:
    """Every module once: the layers' folders, and agentir/ without its links to them."""
    files = [p for pkg in LAYERS for p in (ROOT / pkg).rglob("*.py")]
    return files + [p for p in (ROOT / "agentir").rglob("*.py") if p.relative_to(ROOT / "agentir").parts[0] not in LAYERS]


def _typing_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name | ast.Attribute) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            ids.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return ids


def _imports(path: Path, *, typing: bool = True) -> set[str]:
    """First-party modules imported by ``path`` (relative imports resolved); ``typing=False``
    leaves out those under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skip = set() if typing else _typing_only(tree)
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            found.add(mod)
            # ``from pkg import module`` imports a module, not just a name
            found.update(f"{mod}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] == "agentir"}


def _graph(*, typing: bool = True) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in _source_files()}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for target in _imports(path, typing=typing):
            # map "pkg.mod.Name" onto the longest existing module prefix
            parts = target.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts and ".".join(parts) != name:
                graph[name].add(".".join(parts))
    return graph


def _is_package_of(parent: str, child: str) -> bool:
    return child.startswith(parent + ".")


def test_imports_point_one_way() -> None:
    """No package imports a package above it (e.g. agent_policies importing agentir)."""
    bad = []
    for source, targets in _graph().items():
        src = _layer(source)
        for target in targets:
            dst = _layer(target)
            if dst != src and dst not in ALLOWED[src]:
                bad.append(f"{source} imports {target} ({src} may import only {sorted(ALLOWED[src]) or 'nothing of ours'})")
    assert not bad, "layering violations:\n" + "\n".join(sorted(bad))


def test_no_import_cycles() -> None:
    """No two modules import each other, directly or through others (a package's __init__ re-exporting its own submodules excepted)."""
    graph = _graph(typing=False)
    # A package __init__ importing its submodules (re-exports, registration) is how packages
    # work; the cycle that matters is between modules that are not parent and child.
    edges = {m: {t for t in ts if not _is_package_of(m, t) and not _is_package_of(t, m)} for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The import parser finds function-level and relative imports (so the two tests above can fail)."""
    pkg = tmp_path / "agent_policies"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    f = pkg / "x.py"
    f.write_text("def f():\n    from agentir.imageio import write_bytes_atomic\n    from . import y\n")
    global ROOT
    saved = ROOT
    ROOT = tmp_path
    try:
        assert _imports(f) == {"agentir.imageio", "agentir.imageio.write_bytes_atomic", "agentir.agent_policies", "agentir.agent_policies.y"}
    finally:
        ROOT = saved


def test_the_layers_are_linked_into_agentir() -> None:
    """``agentir/<layer>`` is a link to the top-level ``<layer>/`` folder (one copy of the code)."""
    for pkg in LAYERS:
        link = ROOT / "agentir" / pkg
        assert link.is_symlink() and link.resolve() == (ROOT / pkg).resolve(), f"agentir/{pkg} must link to ../{pkg}"


def test_nothing_is_imported_under_a_bare_top_level_name() -> None:
    """Importing the whole application loads ``agentir.actors`` etc., never a top-level ``actors``,
    ``bus``, ``kernels``, ``toolbox`` or ``agent_policies`` (names other distributions use)."""
    import subprocess
    import sys

    code = (
        "import sys, agentir.cli, agentir.pipeline, agentir.daemon.app, agentir.stream.engine, agentir.cluster, agentir.toolbox.tools\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {LAYERS!r})\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
