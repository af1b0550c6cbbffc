"""Atomic file writes and model states in safetensors.

Everything lottery_rg writes goes to a temporary name first and is renamed into place,
so an interrupted run (even ``kill -9``) leaves either the old file or the new one,
never half of one. Model states are written with safetensors (no pickle), including
buffers such as BatchNorm running statistics; tied weights are stored once.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

__all__ = ["check_safetensors", "atomic_path", "atomic_dir", "atomic_files", "atomic_write_text", "json_path",
           "jsonable", "write_json", "read_json", "temporary_of", "save_state", "load_state", "state_from_file",
           "card_template", "file_sha256", "read_safetensors", "remove_stale_temporaries"]

# the temporary names of the writers below: FILE.tmp<pid> (atomic_path), DIR.partial and DIR.old (atomic_dir),
# .partial-XXXX (atomic_files); a kill leaves them behind, and only these writers make them
_STALE_FILE = re.compile(r"^.+\.tmp\d+$")
_STALE_DIR = re.compile(r"^(.+\.partial|\.partial-.+)$")
_OLD_DIR = re.compile(r"^(.+)\.old$")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary file name next to ``path``; rename it onto ``path`` on success."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``path`` as a whole (complete or absent)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            old = path.with_name(path.name + ".old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextlib.contextmanager
def atomic_files(directory: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder inside ``directory``; on success each file (or folder) written there replaces its
    namesake in ``directory`` by a rename, so an interruption never leaves a half-written file. Other entries of
    ``directory`` are kept (``save_pretrained`` into a user's folder)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=directory))
    try:
        yield tmp
        for item in sorted(tmp.iterdir()):
            target = directory / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def json_path(path: str | os.PathLike, name: str) -> Path:
    """``path`` itself when it is a file or ends in ``.json``, else the file ``name`` inside the folder ``path``."""
    path = Path(path)
    return path if path.suffix == ".json" or path.is_file() else path / name


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = False) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename (optionally flushed to disk first)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return path


def write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> Path:
    """Write ``obj`` (made :func:`jsonable`) as JSON, atomically."""
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=indent) + "\n")


def jsonable(x):
    """Plain JSON types, recursively: tensors and arrays to lists, numpy / torch scalars to Python numbers,
    non-finite floats to None (JSON has no NaN), paths, sets and other objects to strings or lists."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [jsonable(v) for v in x]
    if x is None or isinstance(x, (str, bool)):
        return x
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:  # torch / numpy 0-d and numpy scalars
        return jsonable(x.item())
    if hasattr(x, "tolist"):
        return jsonable(x.tolist())
    return str(x)


def read_json(path: str | os.PathLike):
    """The JSON document in ``path`` (every JSON file lottery_rg reads goes through here); a file that is not JSON
    text — truncated, or binary such as a pickle — is refused naming the path."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not a JSON text file (byte {e.object[e.start:e.start + 1]!r} at position "
                         f"{e.start} is not UTF-8: a binary file, such as a pickle, saved under a .json name?)") from e


def temporary_of(name: str) -> str | None:
    """The file a temporary name of this module's writers stands for (``flow.json.tmp123`` -> ``flow.json``,
    ``level_01.partial`` -> ``level_01``), or None for an ordinary name. A kill leaves such names behind."""
    for suffix in (".partial", ".old"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    stem, dot, tail = name.rpartition(".tmp")
    if dot and stem and tail.isdigit():
        return stem
    if name.startswith(".partial-"):
        return ""
    return None


def save_state(model: nn.Module, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write the full ``state_dict`` (parameters and buffers) of ``model`` to safetensors, atomically."""
    from safetensors.torch import save_model

    with atomic_path(path) as tmp:
        save_model(model, tmp, metadata={"format": "pt", **{k: str(v) for k, v in (metadata or {}).items()}})


def load_state(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> None:
    """Load a state written by :func:`save_state` (or any safetensors state dict) into ``model``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        missing, unexpected = load_model(model, path, strict=False)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is not a readable safetensors file: {e}") from e
    except RuntimeError as e:
        raise ValueError(f"{path} does not fit {type(model).__name__}: {e}") from e
    if strict and (missing or unexpected):
        raise ValueError(f"{path} does not fit {type(model).__name__}: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")


def state_from_file(path: str | os.PathLike, names: list[str] | None = None,
                    device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read some or all tensors of a safetensors file (onto ``device``) without building a model."""
    from safetensors import SafetensorError, safe_open

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        with safe_open(os.fspath(path), framework="pt", device=str(device)) as f:
            keys = f.keys() if names is None else names
            missing = [k for k in keys if k not in f.keys()]
            if missing:
                raise ValueError(f"{path} has no tensors named {missing[:5]}")
            return {k: f.get_tensor(k) for k in keys}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is not a readable safetensors file: {e}") from e


def check_safetensors(path: str | os.PathLike, shapes: dict[str, tuple] | None = None) -> dict[str, tuple]:
    """Check a safetensors file without reading its tensors: a whole header, a file exactly as long as the header
    says (a truncated or padded file is caught), and — with ``shapes`` — exactly these tensor names and shapes.

    Returns ``{name: shape}``; raises ``ValueError`` naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} is missing")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or 8 + n > size:
                raise ValueError(f"a header of {n} bytes does not fit a file of {size} bytes")
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable safetensors file: {e}") from e
    header.pop("__metadata__", None)
    end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    if 8 + n + end != size:
        raise ValueError(f"{path} is damaged: its header describes {8 + n + end} bytes, the file has {size} "
                         f"(truncated while written, or changed since)")
    found = {k: tuple(v["shape"]) for k, v in header.items()}
    if shapes is not None:
        missing = sorted(set(shapes) - set(found))
        extra = sorted(set(found) - set(shapes))
        wrong = sorted(k for k in set(shapes) & set(found) if tuple(shapes[k]) != found[k])
        if missing or extra or wrong:
            raise ValueError(f"{path} does not fit the model: missing {missing[:5]}, unexpected {extra[:5]}, "
                             f"other shapes {wrong[:5]}")
    return found


def card_template(name: str) -> str:
    """Path of a model- or data-set-card template (tickets and flows).

    The templates live in the source tree's top-level ``model_cards/``; an install (a wheel, or an editable
    install) maps that folder into the package as ``lottery_rg.model_cards``, read here through
    ``importlib.resources``. A source tree that is only on ``sys.path`` (not installed) is read directly.
    """
    import importlib.resources

    try:
        folder = importlib.resources.files("lottery_rg.model_cards")
    except ModuleNotFoundError:  # a source checkout on sys.path, not installed
        folder = Path(__file__).resolve().parents[1] / "model_cards"
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"model card template {name} is missing from {folder} (lottery_rg.model_cards)")
    return str(path)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex): the digest a level records for its weights; the Hub's LFS oid of the
    same file is the same number."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """Every tensor of a safetensors file and the SHA-256 of its bytes, from one read of the file."""
    import hashlib

    from safetensors import SafetensorError
    from safetensors.torch import load

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no weights file at {path}")
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        return load(data), digest
    except (SafetensorError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors file: {e}") from e


def remove_stale_temporaries(root: str | os.PathLike) -> list[Path]:
    """Remove what an interrupted writer of this module left under ``root`` (``FILE.tmp<pid>``, ``DIR.partial``,
    ``.partial-XXXX``); a ``DIR.old`` whose ``DIR`` is missing (a kill between :func:`atomic_dir`'s two renames)
    is renamed back, the previous complete version. Only for a folder no other process writes (a run directory
    under its lock). Returns what was removed or restored."""
    root = Path(root)
    done: list[Path] = []
    if not root.is_dir():
        return done
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        for name in files:
            if _STALE_FILE.match(name):
                (here / name).unlink(missing_ok=True)
                done.append(here / name)
        for name in list(dirs):
            path = here / name
            if _STALE_DIR.match(name) or _STALE_FILE.match(name):
                shutil.rmtree(path, ignore_errors=True)
            elif (old := _OLD_DIR.match(name)) is not None:
                target = here / old.group(1)
                if target.exists():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.replace(path, target)
            else:
                continue
            dirs.remove(name)
            done.append(path)
    return done
