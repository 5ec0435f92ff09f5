"""The package layers, enforced: core ← train / export / runtime ← benchmarks.

Every import of a cliplit module is read from the source with ``ast`` (so nothing is imported, and a lazy import
inside a function counts as much as one at the top). Module-level imports must follow the layer rules below; the few
imports that cross a layer are allowed only inside functions (they load optional, heavy stages on demand) and only
where this file names them with the reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "train", "export", "runtime", "benchmarks")

#: what each package may import at module level (besides itself)
MODULE_LEVEL: dict[str, tuple[str, ...]] = {
    "core": (),
    "train": ("core",),
    "export": ("core", "train.network", "train.student", "train.checkpoint"),  # the networks it exports
    "runtime": ("core",),
    "benchmarks": ("core", "train", "export", "runtime"),
}

#: imports allowed only inside a function, each for a stated reason: (importing file, imported module prefix)
LAZY_ONLY: dict[tuple[str, str], str] = {
    ("runtime/backends/torch.py", "train.network"): "the optional PyTorch baseline runs the network itself",
    ("runtime/backends/torch.py", "train.checkpoint"): "the optional PyTorch baseline loads checkpoints",
}

#: packages that never import each other, at any level (what both need lives in core or is passed in)
NEVER: tuple[tuple[str, str], ...] = (("export", "runtime"), ("runtime", "export"))


def _cliplit_imports(path: Path) -> list[tuple[str, bool]]:
    """(module relative to ``cliplit.``, imported at module level?) for every cliplit import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, bool]] = []
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name == "cliplit" or name.startswith("cliplit."):
                found.append(
                    (name.removeprefix("cliplit").lstrip("."), id(node) in top_level or _in_type_check(tree, node))
                )
    return found


def _in_type_check(tree: ast.Module, node: ast.AST) -> bool:
    """Imports under ``if TYPE_CHECKING:`` at module level are module-level edges too (they shape the design)."""
    for statement in tree.body:
        if isinstance(statement, ast.If) and any(child is node for child in ast.walk(statement)):
            return True
    return False


def _sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _allowed(package: str, module: str, targets: tuple[str, ...]) -> bool:
    own = module == package or module.startswith(package + ".")
    return own or any(module == t or module.startswith(t + ".") for t in targets)


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layers(path: Path) -> None:
    relative = str(path.relative_to(ROOT))
    package = relative.split("/")[0]
    for module, module_level in _cliplit_imports(path):
        if _allowed(package, module, MODULE_LEVEL[package]):
            continue
        lazy = next(
            (
                reason
                for (file, prefix), reason in LAZY_ONLY.items()
                if file == relative and (module == prefix or module.startswith(prefix + "."))
            ),
            None,
        )
        assert lazy is not None, f"{relative} imports cliplit.{module}, which the layer rules forbid for {package}/"
        assert not module_level, f"{relative} imports cliplit.{module} at module level; only lazily ({lazy})"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_export_and_runtime_never_import_each_other(path: Path) -> None:
    """Not even lazily: the exporter checks engines with core's runner, and the runtime builds its models from core's
    graph templates."""
    package = str(path.relative_to(ROOT)).split("/")[0]
    for module, _ in _cliplit_imports(path):
        for importer, imported in NEVER:
            assert not (package == importer and _allowed(imported, module, ())), (
                f"{path.relative_to(ROOT)} imports cliplit.{module}: {importer}/ never imports {imported}/"
            )


def test_no_exception_opens_a_forbidden_pair() -> None:
    """A lazy exception between export and runtime would undo the rule above; none may be written."""
    assert not [
        (file, prefix)
        for file, prefix in LAZY_ONLY
        for importer, imported in NEVER
        if file.startswith(importer + "/") and _allowed(imported, prefix, ())
    ]


def test_the_rules_catch_a_violation(tmp_path: Path) -> None:
    """The parser sees both kinds of import, so a forbidden edge cannot hide inside a function."""
    source = tmp_path / "x.py"
    source.write_text("from cliplit.runtime import enhancer\ndef f():\n    import cliplit.export.cli\n")
    assert _cliplit_imports(source) == [("runtime", True), ("export.cli", False)]
    assert not _allowed("train", "runtime.enhancer", MODULE_LEVEL["train"])
    assert _allowed("export", "train.network", MODULE_LEVEL["export"])
    assert _allowed("runtime", "runtime.enhancer", ()) and not _allowed("runtime", "export.cli", ())  # NEVER's test


def test_every_lazy_exception_is_still_used() -> None:
    """A stale exception would silently widen the rules; each must match an import that exists."""
    used = {
        (str(path.relative_to(ROOT)), prefix)
        for path in _sources()
        for module, _ in _cliplit_imports(path)
        for (file, prefix) in LAZY_ONLY
        if file == str(path.relative_to(ROOT)) and (module == prefix or module.startswith(prefix + "."))
    }
    assert set(LAZY_ONLY) == used


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _module_graph() -> dict[str, set[str]]:
    """Module → the cliplit modules it imports, at any level (``from a import b`` counts ``a.b`` when it is a
    module)."""
    modules = {_module_name(path): path for path in _sources()}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                local = target.removeprefix("cliplit.")
                if target.startswith("cliplit.") and local in modules and local != name:
                    graph[name].add(local)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
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
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles_at_any_level() -> None:
    """Allowed edges can still close a loop (export ⇄ runtime once did, through lazy imports): none may."""
    assert _cycles(_module_graph()) == []


def test_the_cycle_check_finds_a_loop() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
