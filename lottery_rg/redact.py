"""No secret is ever written: arguments named like secrets, and known secret values, are recorded as ``***``.

A run records how it was made (the command, its settings) in ``lottery_config.json``, in a ticket's
``config.json`` and model card, in TensorBoard and in ``hub_pushes.json``; ``--hub_token hf_…`` on the command
line (the transformers habit) would otherwise be published with the ticket. Every place that records arguments
goes through this module:

* an argument whose name contains ``token``, ``secret``, ``password`` or ``key`` keeps its name and loses its
  value (``--hub_token ***``). ``tokenizer…``, ``…tokens…`` and ``…token_id``/``token_type…`` name no secret;
* the values of ``HF_TOKEN`` / ``HUGGING_FACE_HUB_TOKEN``, and every value redacted by name in this process
  (:func:`remember`), are replaced wherever they appear in a recorded string;
* the settings lock leaves such arguments out (:func:`without_secrets`): they never change what a level computes.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from collections.abc import Iterable, Mapping

__all__ = ["MASK", "is_secret_name", "remember", "redact", "redact_text", "redact_argv", "redact_command",
           "redact_arguments", "redact_run_info", "without_secrets", "RedactingFilter"]

MASK = "***"
_SECRET_NAME = re.compile(r"token(?!iz|s|_?ids?\b|_?type)|secret|passw|key", re.IGNORECASE)
_SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
_MIN_LENGTH = 6  # shorter values are not searched for in free text (a "1" would blank every digit)
_known: set[str] = set()

_VALUE = r"""(?P<val>"[^"]*"|'[^']*'|[^\s'"]+)"""
_FLAG = re.compile(r"(?<![\w-])(?P<flag>--?(?P<name>[A-Za-z][\w.-]*))(?P<sep>=|\s+)" + _VALUE)
_ASSIGN = re.compile(r"(?<![\w.-])(?P<name>[A-Za-z_][A-Za-z0-9_]*)=" + _VALUE)


def is_secret_name(name) -> bool:
    """Whether an argument (flag, field, environment variable) of this name holds a secret."""
    return bool(_SECRET_NAME.search(str(name).lstrip("-")))


def remember(value) -> None:
    """Treat ``value`` as a secret from now on: it is replaced wherever it appears in recorded text."""
    if isinstance(value, str) and len(value.strip()) >= _MIN_LENGTH:
        _known.add(value.strip())


def _secret_values() -> list[str]:
    values = set(_known)
    for var in _SECRET_ENV:
        value = os.environ.get(var, "").strip()
        if len(value) >= _MIN_LENGTH:
            values.add(value)
    return sorted(values, key=len, reverse=True)  # a longer secret first, so no part of it survives


def redact_text(text: str, flags: bool = True) -> str:
    """``text`` with every known secret value replaced and, with ``flags``, the values of secret-named flags
    (``--hub_token X``, ``--api-key=X``) and assignments (``HF_TOKEN=X``) too."""
    for value in _secret_values():
        text = text.replace(value, MASK)
    if flags:
        def flag(m):
            if not is_secret_name(m["name"]) or (m["sep"] != "=" and m["val"].startswith("-")):
                return m[0]
            return f"{m['flag']}{m['sep']}{MASK}"

        text = _FLAG.sub(flag, text)
        text = _ASSIGN.sub(lambda m: f"{m['name']}={MASK}" if is_secret_name(m["name"]) else m[0], text)
    return text


def redact_argv(argv: Iterable[str]) -> list[str]:
    """A command line (``sys.argv``) with the value of every secret-named flag replaced by ``***``."""
    argv, out = [str(a) for a in argv], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if arg.startswith("-") and is_secret_name(name):
            if eq:
                remember(value)
                out.append(f"{name}={MASK}")
            else:
                out.append(arg)
                if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                    remember(argv[i + 1])
                    out.append(MASK)
                    i += 1
        else:
            out.append(arg)
        i += 1
    return [a if a == MASK or a.endswith("=" + MASK) else redact_text(a, flags=False) for a in out]


def redact_command(command: str | Iterable[str]) -> str:
    """A recorded command (a string, or an argv list) with its secrets replaced; quoted for a shell."""
    if not isinstance(command, str):
        parts = redact_argv(command)
    else:
        try:
            parts = redact_argv(shlex.split(command))
        except ValueError:  # unbalanced quotes: not a command line after all
            return redact_text(command)
    return " ".join(a if a == MASK or a.endswith("=" + MASK) else shlex.quote(a) for a in parts)


def redact(obj):
    """Any record (dicts, lists, strings…) with every secret value and secret-named flag in its strings
    replaced. Keys are kept: use :func:`redact_arguments` for a mapping of argument names to values."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, Mapping):
        return {k: redact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    return obj


def redact_arguments(arguments):
    """Arguments by name (nested mappings too): a secret-named one keeps its name, its value becomes ``***``
    (None and empty values stay as they are: they hold nothing)."""
    if not isinstance(arguments, Mapping):
        return redact(arguments)
    out = {}
    for key, value in arguments.items():
        if is_secret_name(key) and value not in (None, "", False):
            remember(value)
            out[key] = MASK
        else:
            out[key] = redact_arguments(value)
    return out


def redact_run_info(info) -> dict:
    """A run's provenance (``LotteryTrainer(run_info=...)``, a ticket's ``info``): its ``command`` redacted as a
    command line, its ``arguments`` (model and data flags) by name, every other string for known secrets."""
    info = dict(info or {})
    out = {}
    if info.get("command"):  # first: the secrets it names are then known to the rest
        out["command"] = redact_command(info["command"])
    if "arguments" in info:
        out["arguments"] = redact_arguments(info["arguments"])
    return {k: out[k] if k in out else redact(v) for k, v in info.items()}


def without_secrets(arguments):
    """Arguments by name (nested mappings too) without the secret-named ones: what the settings lock compares."""
    if not isinstance(arguments, Mapping):
        return arguments
    return {k: without_secrets(v) for k, v in arguments.items() if not is_secret_name(k)}


class RedactingFilter(logging.Filter):
    """A logging filter (put it on a handler) that redacts every record's message before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
