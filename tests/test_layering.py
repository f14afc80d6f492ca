"""Arrows point down: the import graph of the package, read with ``ast`` (nothing imported).

Layers, lowest first: the core (top-level modules), then ``recon`` and ``zoo``, then
``reproduce``, then ``tutorial``, then ``cli``. A module may import its own layer or lower ones;
the core imports no wing. No module imports a private (``_name``) name of another module, except
the compiled-kernel module ``_qe_kernels`` that ``table`` drives, which is private as a whole.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "mixquant_lite"

# Allowed wings each layer may import (besides "core", which everyone may import).
ALLOWED = {
    "core": set(),
    "recon": set(),
    "zoo": set(),
    "reproduce": {"recon", "zoo"},
    "tutorial": {"recon", "zoo", "reproduce"},
    "cli": {"recon", "zoo", "reproduce"},
    "init": {"recon"},
}
# Private modules that one other module owns (module -> its one importer).
PRIVATE_MODULES = {"mixquant_lite._qe_kernels": "mixquant_lite.table"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "init"
    if parts[1] in ("recon", "zoo", "reproduce", "tutorial"):
        return parts[1]
    return "cli" if parts[1] == "cli" else "core"


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports():
    """(importer, imported module, imported names) for every import in the package."""
    for path in sorted(PKG.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("mixquant_lite"):
                        yield module, a.name, ()
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(module, path.name == "__init__.py", node)
                if target.startswith("mixquant_lite"):
                    yield module, target, tuple(a.name for a in node.names)


def _exists(module: str) -> bool:
    path = PKG.parent / module.replace(".", "/")
    return path.is_dir() or path.with_suffix(".py").is_file()


def _edges():
    out = []
    for importer, target, names in _imports():
        # `from . import x` / `from .pkg import mod`: each name may be a submodule
        subs = [f"{target}.{n}" for n in names if _exists(f"{target}.{n}")]
        targets = subs if subs and len(subs) == len(names) else [target, *subs]
        out += [(importer, t, names) for t in targets]
    return out


def test_the_graph_is_read():
    edges = _edges()
    assert len(edges) > 50
    assert ("mixquant_lite.reproduce.run", "mixquant_lite.zoo.testbeds", ("Testbed", "testbed",
            "testbed_stem")) in edges


def test_arrows_point_down():
    bad = []
    for importer, target, _ in _edges():
        src, dst = _layer(importer), _layer(target)
        if dst not in ("core", src) and dst not in ALLOWED[src]:
            bad.append(f"{importer} ({src}) imports {target} ({dst})")
    assert not bad, "\n".join(bad)


def test_core_imports_no_wing():
    wings = {"recon", "zoo", "reproduce", "tutorial", "cli"}
    bad = [f"{i} -> {t}" for i, t, _ in _edges()
           if _layer(i) == "core" and _layer(t) in wings]
    assert not bad, bad


def test_no_private_names_across_modules():
    bad = []
    for importer, target, names in _imports():
        if target in PRIVATE_MODULES and PRIVATE_MODULES[target] != importer:
            bad.append(f"{importer} imports the private module {target}")
        for n in names:
            if not n.startswith("_") or PRIVATE_MODULES.get(f"{target}.{n}") == importer:
                continue
            bad.append(f"{importer} imports {n} from {target}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", ["export", "evaluate"])
def test_no_module_shadowed_by_a_function(name):
    import mixquant_lite

    assert callable(getattr(mixquant_lite, name))
    assert not (PKG / f"{name}.py").exists() and not (PKG / name).is_dir()


def _functions():
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield path, node


def test_no_package_file_over_400_lines():
    big = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py")
           if (n := p.read_text().count("\n")) > 400}
    assert not big, big


def test_functions_short_and_narrow_or_say_why():
    """At most 60 lines of code (the docstring not counted) and 8 parameters (``self`` not
    counted), unless the docstring gives the reason in a line naming the count ("Ten
    parameters: ...", "... lines: ...")."""
    bad = []
    for path, node in _functions():
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]
        code = node.end_lineno - body[0].lineno + 1 if body else 0
        a = node.args
        params = (len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg)
                  + bool(a.kwarg) - bool(a.args and a.args[0].arg in ("self", "cls")))
        doc = (ast.get_docstring(node) or "").lower()
        reason = "parameters:" in doc or "lines:" in doc
        if (code > 60 or params > 8) and not reason:
            bad.append(f"{path.relative_to(PKG)}:{node.lineno} {node.name}: {code} lines, "
                       f"{params} parameters")
    assert not bad, "\n".join(bad)
