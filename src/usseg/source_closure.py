"""The source files a set of usseg modules runs: their package imports, followed statically.

dvc.yaml lists them as a stage's code dependencies, so editing one method's package leaves
the other methods' stages up to date. Imports are read from the syntax tree (those inside
functions too), never executed; a module imported by name at run time (``importlib``) is
not followed, so callers name such entry points themselves.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "usseg"


def module_file(root: Path, module: str) -> Path | None:
    """``root/a/b.py`` or ``root/a/b/__init__.py`` for module ``a.b`` (None when neither exists)."""
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@functools.cache
def _imported(path: Path) -> frozenset[str]:
    """Every ``usseg`` module an import statement of ``path`` names, with ``from X import y``'s
    ``X.y`` as well (it is a module when such a file exists). Read once per process: dvc.yaml
    asks for the closure of every experiment."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(n for n in names if n == PACKAGE or n.startswith(PACKAGE + "."))


@functools.cache
def _files_below(folder: Path) -> frozenset[Path]:
    """Every file below ``folder``, caches aside."""
    return frozenset(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def closure(modules: Iterable[str], root: Path) -> set[Path]:
    """The files of ``modules`` and of every package module they import, transitively, with
    the ``__init__.py`` of each package on the way (importing ``a.b`` runs ``a``'s too) and
    the data files beside them (``evaluation/published.yaml``: its modules read it).
    ``root`` is the folder that holds the ``usseg`` package."""
    todo, seen = list(modules), set()
    files: set[Path] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        path = module_file(root, name)
        if path is None:  # ``from pkg import a_function``: not a module
            continue
        files.add(path)
        files.update(p for p in path.parent.iterdir() if p.is_file() and p.suffix not in (".py", ".pyc"))
        todo += sorted(_imported(path))
    return files


def covering_paths(files: set[Path], root: Path) -> list[str]:
    """``files`` as the fewest paths relative to ``root``'s parent: a folder when every file
    in it (caches aside) is among them, else the files themselves, sorted."""
    def complete(folder: Path) -> bool:
        return _files_below(folder) <= files

    out: set[Path] = set()
    for path in files:
        top = path
        for parent in path.parents:
            if parent == root or not parent.is_relative_to(root) or not complete(parent):
                break
            top = parent
        out.add(top)
    return sorted(str(p.relative_to(root.parent)) for p in out)
