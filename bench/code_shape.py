"""The shape of the code: the longest functions, the longest modules, import cycles.

    python bench/code_shape.py [--top 10] [--module-lines 450] [--json]

Reads ``daemon/`` and ``services/`` as text (nothing is imported). A function's length is
its line span (decorators and docstring included); a module's is its line count. An import
cycle is a strongly connected group of modules in the graph of ``import``/``from ... import``
statements between project modules, counting those under ``if TYPE_CHECKING:`` and those
inside functions (a deferred import still ties two modules together). A package cycle is
the same between the units of ``services/`` (each subpackage, and each top-level module)
and ``daemon``.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("daemon", "services")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            found[module_name(path)] = path
    return found


def package_of(module: str) -> str:
    """``services.training.recipe`` -> ``services.training``; ``daemon.app`` -> ``daemon``;
    a top-level module of ``services`` is a unit of its own (``services.metrics``)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "services" else parts[0]


def functions(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                end = child.end_lineno or child.lineno
                out.append((end - start + 1, f"{module}:{prefix}{child.name}"))
                walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")

    walk(tree, "")
    return out


def imports(tree: ast.AST, module: str, known: set[str]) -> set[str]:
    is_package = module in known and (REPO / module.replace(".", "/") / "__init__.py").exists()
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                root = ".".join([*base, node.module] if node.module else base)
            else:
                root = node.module or ""
            names = [root, *(f"{root}.{a.name}" for a in node.names)]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def measure(top: int, module_lines: int) -> dict[str, object]:
    found = sources()
    known = set(found)
    funcs: list[tuple[int, str]] = []
    lengths: dict[str, int] = {}
    graph: dict[str, set[str]] = {}
    for module, path in found.items():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        lengths[module] = len(text.splitlines())
        funcs.extend(functions(tree, module))
        # A package's own __init__ importing its submodules is not a cycle between modules.
        graph[module] = {m for m in imports(tree, module, known) if not m.startswith(module + ".")}
    funcs.sort(key=lambda f: (-f[0], f[1]))
    packages: dict[str, set[str]] = {}
    for m, deps in graph.items():
        packages.setdefault(package_of(m), set()).update(
            package_of(d) for d in deps if package_of(d) != package_of(m)
        )
    services_to_daemon = sorted(
        f"{m} -> {d}"
        for m, deps in graph.items()
        if m.startswith("services")
        for d in deps
        if d.startswith("daemon")
    )
    return {
        "modules": len(found),
        "lines": sum(lengths.values()),
        "longest_functions": [{"lines": n, "name": name} for n, name in funcs[:top]],
        "modules_over": {
            "limit": module_lines,
            "modules": [
                {"lines": n, "name": m}
                for m, n in sorted(lengths.items(), key=lambda kv: -kv[1])
                if n > module_lines
            ],
        },
        "import_cycles": cycles(graph),
        "package_cycles": cycles(packages),
        "services_importing_daemon": services_to_daemon,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--module-lines", type=int, default=450)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    result = measure(args.top, args.module_lines)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['modules']} modules, {result['lines']} lines in {', '.join(PACKAGES)}")
    print(f"\nthe {args.top} longest functions (lines):")
    for f in result["longest_functions"]:  # type: ignore[attr-defined]
        print(f"  {f['lines']:4d}  {f['name']}")
    over = result["modules_over"]["modules"]  # type: ignore[index]
    print(f"\nmodules over {args.module_lines} lines: {len(over)}")
    for m in over:
        print(f"  {m['lines']:4d}  {m['name']}")
    cyc = result["import_cycles"]
    print(f"\nimport cycles: {len(cyc)}")  # type: ignore[arg-type]
    for group in cyc:  # type: ignore[attr-defined]
        print("  " + " <-> ".join(group))
    pcyc = result["package_cycles"]
    print(f"\npackage cycles (services/<package> or services/<module>, and daemon): {len(pcyc)}")  # type: ignore[arg-type]
    for group in pcyc:  # type: ignore[attr-defined]
        print("  " + " <-> ".join(group))
    back = result["services_importing_daemon"]
    print(f"\nservices/ importing daemon/: {len(back)}")  # type: ignore[arg-type]
    for edge in back:  # type: ignore[attr-defined]
        print(f"  {edge}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
