#!/usr/bin/env python3
"""Print the lower bounds of setup.cfg's requirements as exact pins: the constraints of the floor environment.

``make test-floor`` installs ``.[test]`` under these constraints, so the oldest versions lottery_rg claims to
support (install_requires and the test extra) are the versions that environment tests. Each requirement must
have a lower bound (``>=`` or ``==``); one without is an error, since nothing would say what to test.
Only the standard library is used (it runs before any environment exists).
"""

from __future__ import annotations

import configparser
import re
import sys
from pathlib import Path

SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"
_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def requirements(cfg_path: Path = SETUP_CFG) -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(cfg_path)
    lines = cfg["options"]["install_requires"].splitlines() + cfg["options.extras_require"]["test"].splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def floor_pin(requirement: str) -> str:
    m = _REQ.match(requirement)
    if not m:
        raise ValueError(f"cannot read the requirement {requirement!r}")
    name, spec = m.group(1), m.group(3).split(";")[0]
    pins = dict(re.findall(r"(==|>=)\s*([0-9][^,\s]*)", spec))
    if not pins:
        raise ValueError(f"{requirement!r} has no lower bound: the floor environment would not know what to test")
    return f"{name}=={pins.get('==') or pins['>=']}"


if __name__ == "__main__":
    try:
        print("\n".join(floor_pin(r) for r in requirements()))
    except ValueError as e:
        sys.exit(f"{SETUP_CFG}: {e}")
