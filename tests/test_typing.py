"""The package is typed (PEP 561): ``py.typed`` ships with it, and every function and public method of the public
API (what ``lottery_rg`` re-exports) annotates its parameters and its result."""

from __future__ import annotations

import configparser
import inspect
from pathlib import Path

import lottery_rg

ROOT = Path(__file__).resolve().parents[1]


def _unannotated(qual: str, fn) -> list[str]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    out = [f"{qual}({n})" for n, p in sig.parameters.items() if n not in ("self", "cls")
           and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.annotation is inspect.Parameter.empty]
    if sig.return_annotation is inspect.Signature.empty and not qual.endswith("__init__"):
        out.append(f"{qual} -> ?")
    return out


def test_py_typed_is_shipped():
    assert (ROOT / "lottery_rg" / "py.typed").is_file()
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert "py.typed" in cfg["options.package_data"]["lottery_rg"]


def test_the_public_api_is_annotated():
    missing = []
    for name in lottery_rg.__all__:
        obj = getattr(lottery_rg, name)
        if not inspect.isclass(obj):
            missing += _unannotated(name, obj)
            continue
        for attr, member in vars(obj).items():
            if attr.startswith("_") and attr != "__init__":
                continue
            fn = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
            if callable(fn) and getattr(fn, "__module__", "").startswith("lottery_rg"):
                missing += _unannotated(f"{name}.{attr}", fn)
    assert missing == [], missing
