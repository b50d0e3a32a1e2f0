"""The package's layout is its architecture (ARCHITECTURE.md): each product is a sub-package, and
imports point downwards only, at module level or inside functions alike."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "vreid_jax"

# Highest first. A module may import its own layer and any layer below it, never one above.
LAYERS = [
    # The commands and what they share: flags, modes, the validation of a whole config.
    ("entry points", ("vreid_jax.main", "vreid_jax.run", "vreid_jax.config_lib", "vreid_jax.tools")),
    ("use of a trained model", ("vreid_jax.deploy",)),
    ("training", ("vreid_jax.training",)),
    ("evaluation", ("vreid_jax.evaluation",)),
    ("models", ("vreid_jax.models",)),
    ("data", ("vreid_jax.data",)),
]
# What every layer may use: the modules at the top of the package, and each package's `choices`
# (the allowed values of its config keys, which the config validation asks).
SHARED = "shared utilities"
# Siblings that must not know each other.
UNRELATED = [("vreid_jax.models", "vreid_jax.data")]


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    """The layer's rank (0 = highest); shared utilities rank below every layer."""
    if module.endswith(".choices"):
        return len(LAYERS)
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return len(LAYERS)


def _layer_name(rank: int) -> str:
    return LAYERS[rank][0] if rank < len(LAYERS) else SHARED


def _imports(path: pathlib.Path) -> set[str]:
    """Every vreid_jax module `path` imports, `from vreid_jax.x import y` counted as x.y when y is
    a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("vreid_jax")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vreid_jax"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py")
                is_package = PACKAGE.parent / candidate.replace(".", "/") / "__init__.py"
                found.add(candidate if is_module.exists() or is_package.exists() else node.module)
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_imports_point_downwards():
    upward = [
        f"{module} ({_layer_name(_layer(module))}) imports {imported} "
        f"({_layer_name(_layer(imported))})"
        for module, imported_modules in _graph().items()
        for imported in imported_modules
        if _layer(imported) < _layer(module)
    ]
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize(("a", "b"), UNRELATED)
def test_siblings_do_not_know_each_other(a, b):
    crossing = [
        f"{module} imports {imported}"
        for module, imported_modules in _graph().items()
        for imported in imported_modules
        for x, y in ((a, b), (b, a))
        if module.startswith(x) and imported.startswith(y)
    ]
    assert not crossing, "\n".join(crossing)


def test_no_import_cycle():
    graph = _graph()
    visiting, done = [], set()

    def visit(module):
        if module in done:
            return
        assert module not in visiting, "import cycle: " + " -> ".join([*visiting, module])
        visiting.append(module)
        for imported in graph.get(module, ()):
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in graph:
        visit(module)

