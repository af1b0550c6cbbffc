"""The package's layers, as its docstring states them, hold: a module imports only from its own layer and the layers
below it (function-level and type-checking imports included), and every sub-package and top-level module is in
a layer. The order is read from ``lottery_rg.__doc__``, the one place it is written down."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import lottery_rg

PACKAGE = Path(lottery_rg.__file__).parent


def layers() -> dict[str, int]:
    """``{"models": 2, "flow": 4, ...}`` from the layer table of the package docstring."""
    found = {}
    for line in lottery_rg.__doc__.splitlines():
        m = re.match(r"^\s+(\d+)\s+([\w, ]+?)\s{2,}\S", line)
        if m:
            for name in m.group(2).split(","):
                found[name.strip()] = int(m.group(1))
    return found


def part(module: str) -> str:
    """The sub-package or top-level module a dotted module name belongs to (``lottery_rg.hub.ticket`` -> ``hub``)."""
    return module.split(".")[1]


def imports() -> list[tuple[str, str, int]]:
    """(importing module, imported lottery_rg module, line) for every import inside the package but its root."""
    out = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        name = ".".join(parts)
        if name == "lottery_rg":
            continue  # the public API: it names everything (lazily)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = parts if is_pkg else parts[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                if t.startswith("lottery_rg.") and part(t) != part(name):
                    out.append((name, t, node.lineno))
    return out


def test_the_docstring_states_every_layer():
    table = layers()
    assert len(set(table.values())) >= 8, table
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").is_file())}
    assert parts - set(table) == set(), f"not in any layer of the package docstring: {sorted(parts - set(table))}"


def test_imports_go_down_the_layers_only():
    table = layers()
    upward = [f"{src}:{line} imports {dst} (layer {table[part(src)]} -> {table[part(dst)]})"
              for src, dst, line in imports() if table[part(dst)] > table[part(src)]]
    assert upward == [], "\n".join(upward)


def test_the_check_can_fail():
    """An upward import is seen (the check is not vacuous): the training layer (its run record) is above the flow."""
    table = layers()
    assert table["training"] > table["flow"] > table["models"]
    assert ("lottery_rg.training.record", "lottery_rg.flow.core") in {(s, d) for s, d, _ in imports()}
