"""A griffe extension for the docs site (mkdocs.yml loads it; `make docs` runs it).

1. ``lottery_rg`` re-exports its public API through a PEP 562 ``__getattr__`` driven by the ``_LAZY`` table
   (name -> defining module), so ``import lottery_rg`` stays cheap. Static analysis cannot see those names; this
   extension reads the same table and adds them as aliases, so the API reference documents
   ``lottery_rg.LotteryTrainer`` under the name users import, wherever the table says it lives. A name that is
   already a member (a static import) is left alone.
2. The docstrings use Sphinx roles (``:class:`~lottery_rg.flow.IMPFlow```), which Markdown shows verbatim. They
   become code spans, linked when the object is documented on the site (an *optional* cross-reference: a role
   naming an object that is not rendered stays plain code instead of failing the strict build), and the reST
   ``Text::`` that introduces a literal block reads ``Text:``.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj):`(?P<body>[^`]+)`")
_LITERAL_BLOCK = re.compile(r"(?<=\S)::$", re.MULTILINE)  # reST "Text::" before an indented block


class LazyExports(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.path != "lottery_rg":
            return
        table = pkg.members.get("_LAZY")
        if table is not None and table.value is not None:
            for name, module in ast.literal_eval(str(table.value)).items():
                module = module if module.startswith(f"{pkg.path}.") else f"{pkg.path}.{module}"
                if name not in pkg.members:
                    pkg.set_member(name, griffe.Alias(name, f"{module}.{name}", parent=pkg))
        for obj in _objects(pkg):
            if obj.docstring is not None and ":" in obj.docstring.value:
                text = _ROLE.sub(lambda m, obj=obj: _reference(obj, m["body"]), obj.docstring.value)
                obj.docstring.value = _LITERAL_BLOCK.sub(":", text)


def _objects(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)


def _reference(obj: griffe.Object, body: str) -> str:
    """``Title <target>``, ``~a.b.C`` (shown as ``C``) or ``a.b.C`` -> a code span, linked when it resolves."""
    title, _, target = body.partition(" <")
    if target:
        target = target.rstrip(">")
    else:
        target = title = body
        if body.startswith("~"):
            target, title = body[1:], body[1:].rsplit(".", 1)[-1]
    target = target.lstrip(".")
    path = _resolve(obj, target)
    code = f"<code>{title}</code>"
    return f'<autoref identifier="{path}" optional>{code}</autoref>' if path else f"`{title}`"


def _resolve(obj: griffe.Object, target: str) -> str | None:
    scopes = [o.path for o in (obj, obj.parent, obj.module) if o is not None] + ["lottery_rg", ""]
    for scope in scopes:
        try:
            found = obj.modules_collection[f"{scope}.{target}" if scope else target]
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
        try:
            return found.canonical_path
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None
    return None
