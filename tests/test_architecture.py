"""The shape of the code base: module sizes, package layering, one exception tree.

These read the source with ``ast`` (imports inside functions and under TYPE_CHECKING
count), so a new import that points up the layering fails here, not in a review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import embedgen

ROOT = Path(embedgen.__file__).parent

LAYERS: list[set[str]] = [
    {"errors", "redact", "util", "logfile"},
    {"config"},
    {"cache", "models"},
    {"budget"},
    {"providers"},
    {"router"},
    {"batch", "sinks"},
    {"pipeline"},
    {"optimize", "engines"},
    {"doctor", "cli", "__main__", "__init__"},
    # __init__ is the root facade: embedgen.embed_corpus and __version__
]
"""Bottom to top: a unit may import only units of its own layer or below it."""

MAX_LINES = 400


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def _unit(path: Path) -> str:
    """The package (or top-level module) a file belongs to: ``cache``, ``errors``..."""
    rel = path.relative_to(ROOT).parts
    return rel[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    """Top-level units of embedgen this file imports, anywhere in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "embedgen":
            # ``from embedgen import __version__`` is a constant, not a dependency
            names = [f"embedgen.{a.name}" for a in node.names if not a.name.startswith("__")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "embedgen" and len(parts) > 1:
                out.add(parts[1])
    return out


def _layer(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"{unit!r} is in no layer of tests/test_architecture.py: add it")


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, long


def test_packages_import_only_downward() -> None:
    bad = []
    for path in _modules():
        unit = _unit(path)
        for dep in _imports(path):
            if dep != unit and _layer(dep) > _layer(unit):
                bad.append(f"{path.relative_to(ROOT)} ({unit}) imports {dep}")
    assert not bad, "\n".join(bad)


def test_no_two_packages_import_each_other() -> None:
    edges: set[tuple[str, str]] = set()
    for path in _modules():
        unit = _unit(path)
        edges.update((unit, dep) for dep in _imports(path) if dep != unit)
    both = sorted({tuple(sorted(e)) for e in edges if (e[1], e[0]) in edges})
    assert not both, both


def test_every_exception_class_is_in_errors_py() -> None:
    outside = []
    for path in _modules():
        if path.name == "errors.py" and path.parent == ROOT:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b) for b in node.bases}
                named = {"EmbedgenError", "BudgetExceeded", "OverBudget"}
                if any(b.endswith(("Error", "Exception", "Warning")) or b in named for b in bases):
                    outside.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert not outside, outside


def test_every_exception_is_drawn_in_the_tree() -> None:
    import inspect

    from embedgen import errors

    doc = errors.__doc__ or ""
    classes = [
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == errors.__name__
    ]
    missing = [name for name in classes if name not in doc]
    assert not missing, missing


CONTRACT_PROBES = {
    "available", "seconds_until_available", "can_afford", "members", "on_rate_limits",
    "budget_gate", "stats", "inner", "embed_batch", "tokenizer", "close", "info",
}  # fmt: skip
"""Names that were once probed on providers with getattr/hasattr (issue #10)."""


def test_providers_are_not_probed_for_capabilities() -> None:
    """The Provider contract is embed_batch, info, tokenizer(), close(): nothing else is probed."""
    probes = []
    for pkg in ("pipeline", "providers", "budget", "router"):
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                    continue
                name = node.args[1] if node.func.id in ("hasattr", "getattr") else None
                if node.func.id == "hasattr" or (
                    isinstance(name, ast.Constant) and name.value in CONTRACT_PROBES
                ):
                    probes.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not probes, "\n".join(probes)


STDLIB_PRIVATE = {"os._exit", "atexit._run_exitfuncs"}
"""Private names of the standard library that embedgen calls on purpose."""


def _own_private_names(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, classes, names and ``self._x`` attributes."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if n.startswith("_")}


def test_no_module_reads_another_modules_private_attribute() -> None:
    """``x._name`` only for ``self``/``cls`` or a name the module itself defines (issue #19:
    the Ray engine once swapped members' ``_requests`` and imported ``read._read_parquet``)."""
    bad = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        own = _own_private_names(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
                continue
            if node.attr.startswith(("__", "_embedgen")) or node.attr in own:
                continue  # _embedgen...: this package's own tag on a foreign object
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if ast.unparse(node) in STDLIB_PRIVATE:
                continue
            bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and "embedgen" in node.module:
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {alias.name}")
    assert not bad, "\n".join(bad)


def test_no_type_ignore_in_engines() -> None:
    """The engines are typed through (issue #19: a fake ``Window(docs=None)`` hid behind one)."""
    bad = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "engines").rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "type: ignore" in line
    ]
    assert not bad, bad
