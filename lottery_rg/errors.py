"""Refusals: every mistake gets one line naming the culprit and what to do, and an exit status; no traceback.

lottery_rg refuses bad input with ``ValueError`` (:class:`UsageError` where the message names a flag, a file or a
value). The entry points — ``examples/run_imp.py``, ``examples/run_elastic.py`` and the ``lottery-rg`` command —
are wrapped in :func:`command`, the one handler: it turns any exception into one line on stderr
(``PROG: error: …``) and an exit status, and shows Python's traceback only when ``LOTTERY_RG_DEBUG=1``.

===========  ==========================================================================================
exit status  meaning
===========  ==========================================================================================
2            refused: a flag, a value, a file or a run directory that has to change (as argparse does)
1            failed while working: the disk is full, the storage is read-only, out of memory, a bug
3            a Hub push failed (``run_imp.py``: the run itself is complete; run the command again)
130          interrupted (Ctrl-C): run the same command again to resume
===========  ==========================================================================================

Operating-system errors are named with their file and a fix (a full disk — also torch's ``basic_ios::clear:
iostream error`` — a read-only or unwritable folder, a path that is a file). :func:`check_field_types` gives the
dataclasses of the command line a type check, so a Python call such as ``LotteryArguments(levels="3")`` is refused
naming the field rather than failing inside a comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import functools
import os
import shutil
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["UsageError", "LotteryError", "DEBUG_ENV", "command", "describe", "one_line", "ArgumentParser",
           "check_field_types", "note_output_dir", "debugging"]

DEBUG_ENV = "LOTTERY_RG_DEBUG"
USAGE, FAILED, INTERRUPTED = 2, 1, 130
_output_dir: Path | None = None  # where the running command writes (named when the disk fills up)


class LotteryError(Exception):
    """An error lottery_rg explains itself; ``exit_code`` is the status a command exits with."""

    exit_code = FAILED


class UsageError(LotteryError, ValueError):
    """Bad input: a flag, a value, a file or a run directory the user has to change (exit status 2)."""

    exit_code = USAGE


def debugging() -> bool:
    """``LOTTERY_RG_DEBUG`` is set (to anything but 0/false/no): show tracebacks."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def note_output_dir(path: str | os.PathLike | None) -> None:
    """Remember the folder the running command writes to: a full disk is reported with its free space."""
    global _output_dir
    _output_dir = Path(path) if path is not None else None


def one_line(text: str) -> str:
    """A message on one line: its lines joined (after a colon with a space, otherwise with '; ')."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    out = ""
    for line in lines:
        out = line if not out else out + (" " if out.endswith((":", ",")) else "; ") + line
    return out


# what torch.save says when a write fails (the disk is full): its zip writer reports the position it could not reach
_TORCH_WRITE_FAILURES = ("basic_ios::clear", "iostream error", "file write failed", "PytorchStreamWriter failed",
                         "No space left on device", "StorageFull", "inline_container.cc")


def _free_space() -> str:
    where = _output_dir
    while where is not None and not where.exists() and where != where.parent:
        where = where.parent
    if where is None:
        return ""
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return ""
    return f" ({free / 2**20:.0f} MiB free under {where})"


def _os_error(e: OSError) -> tuple[int, str]:
    """An operating-system error named with its file and a fix."""
    name = e.filename if e.filename is not None else (_output_dir or "a file")
    reason = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on the device" if e.errno == errno.ENOSPC else "the disk quota is used up"
        return FAILED, (f"{what} while writing {name}{_free_space()}: free some space or choose another "
                        f"--output_dir, then run the same command again (finished work is kept)")
    if e.errno == errno.EROFS:
        return FAILED, (f"{name} is on read-only storage: nothing can be written there; choose a writable "
                        f"--output_dir (a finished run can still be read there: lottery-rg flow, "
                        f"LotteryTicket.from_run)")
    if e.errno in (errno.EACCES, errno.EPERM):
        return FAILED, f"no permission to write or read {name} ({reason}): choose a folder you may write to"
    if e.errno == errno.EEXIST:
        return USAGE, f"{name} already exists as a file where a folder is needed: choose another path"
    if e.errno == errno.ENOTDIR:
        return USAGE, f"{name}: a folder on this path is a file ({reason}): choose another path"
    if e.errno == errno.EISDIR:
        return USAGE, f"{name} is a folder where a file is needed ({reason}): choose another path"
    if e.errno == errno.ENOENT:
        return USAGE, f"no such file or folder: {name}"
    return FAILED, f"{name}: {reason} (an operating-system error {errno.errorcode.get(e.errno, e.errno)})"


def describe(exc: BaseException) -> tuple[int, str]:
    """The exit status and the one-line message for ``exc``."""
    code = getattr(exc, "exit_code", None)
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED, "interrupted; run the same command again to resume (finished levels are kept)"
    if isinstance(exc, OSError) and not isinstance(exc, LotteryError) and exc.errno is not None:
        return _os_error(exc)
    text = one_line(str(exc)) or type(exc).__name__
    if isinstance(code, int):
        return code, text
    if isinstance(exc, (ValueError, OSError)):  # refusals of a value or a path (lottery_rg's and the libraries')
        return USAGE, text
    if isinstance(exc, RuntimeError) and any(s in str(exc) for s in _TORCH_WRITE_FAILURES):
        return FAILED, (f"writing a file failed ({text}); the disk is most likely full{_free_space()}: free some "
                        f"space or choose another --output_dir, then run the same command again")
    if type(exc).__name__ == "OutOfMemoryError":
        return FAILED, (f"out of memory ({text.split('.')[0]}): lower --per_device_train_batch_size (and raise "
                        f"--gradient_accumulation_steps to keep the batch), then run the same command again")
    return FAILED, (f"{type(exc).__name__}: {text} — not a refusal lottery_rg knows: run with {DEBUG_ENV}=1 for the "
                    f"traceback and report it")


def command(prog: str | None = None, *, returns_status: bool = False) -> Callable:
    """Decorate an entry point (``main(argv=None)``): an exception becomes one line ``PROG: error: …`` on stderr
    and the exit status of :func:`describe` — raised as ``SystemExit`` (a script's ``main``), or returned when
    ``returns_status`` (a command whose ``main`` returns its exit status). ``LOTTERY_RG_DEBUG=1`` lets it
    propagate with its traceback."""

    def wrap(main: Callable) -> Callable:
        @functools.wraps(main)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return main(*args, **kwargs)
            except SystemExit:
                raise
            except BaseException as e:  # noqa: BLE001  (one line for everything; the traceback on request)
                if debugging():
                    raise
                code, message = describe(e)
                name = prog or os.path.basename(sys.argv[0] or "lottery-rg")
                print(f"{name}: error: {message}", file=sys.stderr, flush=True)
                if returns_status:
                    return code
                raise SystemExit(code) from None

        return run

    return wrap


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (not the whole usage) and point at ``--help``."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(USAGE, f"{self.prog}: error: {one_line(message)} ({self.prog} --help lists the flags)\n")


# ------------------------------------------------------------------------------------------- dataclass field types
def _accepts(hint: Any, value: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(h, value) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (list, tuple):
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(_accepts(inner, v) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a hint this check does not model: left to the code that uses it


def _hint_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_hint_name(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if typing.get_origin(hint) in (list, tuple):
        inner = (typing.get_args(hint) or (Any,))[0]
        return "a list of " + {str: "strings", int: "whole numbers", float: "numbers"}.get(inner, _hint_name(inner))
    return {int: "a whole number (int)", float: "a number (float)", str: "a string", bool: "True or False",
            dict: "a dict"}.get(hint, getattr(hint, "__name__", str(hint)))


def check_field_types(obj: Any) -> None:
    """Refuse a dataclass field whose value does not have the annotated type (ints for floats are accepted), naming
    the field, its flag, the value and the type: a Python call gets the same answer the command line gives."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if not f.init or f.name not in hints:
            continue
        value = getattr(obj, f.name)
        if not _accepts(hints[f.name], value):
            raise UsageError(f"{type(obj).__name__}({f.name}={value!r}): --{f.name} must be "
                             f"{_hint_name(hints[f.name])}, not {type(value).__name__}")
