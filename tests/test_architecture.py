"""The layout of docs/ARCHITECTURE.md, enforced: layers import downwards only, no import circles (lazy
imports inside functions count), no `_private` name taken from another module, pages use the public API.

The code is read with `ast`, never imported, so a circle that Python happens to tolerate at import
time still fails here.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Low to high: a module may import its own layer and the layers below it (docs/ARCHITECTURE.md).
LAYERS = [
    ("foundation", ["llc_core.errors", "llc_core.defaults"]),
    ("types", ["llc_core.budget", "llc_core.config", "llc_core.result", "llc_core.problem", "llc_core.losses"]),
    ("sampling", ["llc_core.sampling"]),
    ("single run", ["llc_core.model_function", "llc_core.refine", "llc_core.batching", "llc_core.diagnostics", "llc_core.stream", "llc_core.schedule",
                    "llc_core.bookkeeping", "llc_core.estimator"]),
    ("truth", ["llc_core.truth"]),
    ("files", ["llc_core.files"]),
    ("problems", ["llc_core.problems", "llc_core.runner"]),
    ("execution", ["llc_core.execution", "llc_core.execution.ray_backend"]),
    ("studies", ["llc_core.studies"]),
    ("interfaces", ["llc_core.cli", "llc_core.__main__", "llc_core"]),
    ("app", ["pages", "app"]),
]


def module_files() -> dict[str, pathlib.Path]:
    files = {"app": ROOT / "app.py"}
    for top in ("llc_core", "pages"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


MODULES = module_files()


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def layer_of(name: str) -> int:
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"module {name} is in no layer of tests/test_architecture.py: add it"
    return best


def absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import in the file, lazy ones too."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = absolute(module, node)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES:
                    found.append((submodule, [], node.lineno))
                else:
                    found.append((source, [alias.name], node.lineno))
    return [(target, names, line) for target, names, line in found if target in MODULES]


EDGES = {module: imports(module) for module in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_layers_import_only_downwards():
    wrong = []
    for module, edges in EDGES.items():
        for target, _, line in edges:
            if layer_of(target) > layer_of(module):
                wrong.append(f"{module}:{line} imports {target} ({LAYERS[layer_of(module)][0]} -> "
                             f"{LAYERS[layer_of(target)][0]}, a higher layer)")
    assert not wrong, "\n".join(wrong)


def test_engine_modules_import_modules_not_faces():
    """Inside llc_core a module takes names from the module that defines them, never from a package's
    face: a face imports its package's modules, so taking a name from it would load a half-built module."""
    wrong = [f"{module}:{line} takes {', '.join(names)} from the face {target}"
             for module, edges in EDGES.items() if module.startswith("llc_core.")
             for target, names, line in edges if names and is_package(target)]
    assert not wrong, "\n".join(wrong)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of one node without a self-loop are left out."""
    index, low, on_stack, stack, result, counter = {}, {}, set(), [], [], [0]

    def visit(root: str) -> None:
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def test_no_import_circles():
    graph = {module: {target for target, _, _ in edges} for module, edges in EDGES.items()}
    assert strongly_connected(graph) == []


def test_strongly_connected_finds_a_circle():
    # the checker itself can fail: a three-module loop and a self-import are found
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"a"}}) == [["a"]]


def private_uses(module: str) -> list[str]:
    """`from ours import _name`, and `alias._name` where alias is one of our modules imported here."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found = [f"{module}:{line} takes {name} from {target}"
             for target, names, line in EDGES[module] if target != module
             for name in names if name.startswith("_") and not name.startswith("__")]
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = absolute(module, node)
            for alias in node.names:
                if f"{source}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{module}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    return found


def test_no_private_name_crosses_modules():
    wrong = [use for module in MODULES for use in private_uses(module)]
    assert not wrong, "\n".join(wrong)


def test_pages_use_the_public_api():
    """The app imports from `llc_core` or one level below it (a sub-package's face or a top-level
    module), never from inside a sub-package: what a sub-package offers is what its face names."""
    wrong = []
    for module in MODULES:
        if layer_of(module) != len(LAYERS) - 1:
            continue
        for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
            sources = ([absolute(module, node)] if isinstance(node, ast.ImportFrom)
                       else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for source in sources:
                if source.startswith("llc_core.") and source.count(".") > 1:
                    wrong.append(f"{module}:{node.lineno} imports from {source}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", ["sampling", "truth", "files", "studies", "execution", "cli"])
def test_sub_packages_have_a_face(package):
    face = ROOT / "llc_core" / package / "__init__.py"
    assert face.exists()
    assert ast.get_docstring(ast.parse(face.read_text(encoding="utf-8"))), f"llc_core/{package} needs a docstring"


MAX_FUNCTION_LINES = 80
MAX_POSITIONAL = 6


def oversized_functions(tree: ast.AST, where: str) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            positional = [a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES or len(positional) > MAX_POSITIONAL:
                found.append(f"{where}:{node.lineno} {node.name}: {length} lines, {len(positional)} positional arguments")
    return found


def test_engine_functions_are_short_with_few_positional_arguments():
    """Functions read at once; state shared by many steps lives in a small dataclass, not in a dozen
    positional arguments (keyword-only arguments do not count)."""
    wrong = [found for module in MODULES if module.startswith("llc_core")
             for found in oversized_functions(ast.parse(MODULES[module].read_text(encoding="utf-8")), module)]
    assert not wrong, "\n".join(wrong)


def test_oversized_functions_are_found():
    long_body = "\n".join(["def f(a, b, c, d, e, f, g):"] + ["    x = 1"] * 3)
    assert len(oversized_functions(ast.parse(long_body), "m")) == 1
    assert oversized_functions(ast.parse("def f(a, *, b, c, d, e, f, g, h):\n    pass"), "m") == []
    assert len(oversized_functions(ast.parse("def f():\n" + "    x = 1\n" * 81), "m")) == 1


def test_estimate_llc_reads_top_to_bottom():
    tree = ast.parse(MODULES["llc_core.estimator"].read_text(encoding="utf-8"))
    [function] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "estimate_llc"]
    assert function.end_lineno - function.lineno + 1 < 70
