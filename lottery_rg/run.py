"""The run directory: every file of an IMP run in one place, and the records it holds.

A run directory is what ``LotteryTrainer.run_imp`` writes and what the flow, tickets,
the stability analysis and the elastic experiment read::

    RUN/
    ├── lottery_config.json      RunDir.config        settings of the run (a re-run must match)
    ├── rewind.safetensors       RunDir.rewind        θ_k: parameters and buffers at the rewind step
    ├── init.safetensors         RunDir.init          θ_0 when k > 0 (with k = 0, rewind.safetensors is θ_0)
    ├── rewind_state.json        RunDir.rewind_state  the TrainerState at step k (k > 0)
    ├── level_XX/                RunDir.level(n)      written atomically: complete or absent
    │   ├── mask.safetensors     RunDir.mask(n)
    │   ├── model.safetensors    RunDir.model(n)      the level's trained weights
    │   └── metrics.json         RunDir.metrics(n)    the level record (density, metrics, digest)
    ├── flow.json                RunDir.flow
    ├── .lottery_rg.lock         RunDir.lock_file     held (flock) by the one process that writes the run
    ├── checkpoints/NAME/        RunDir.checkpoints(NAME)  Trainer checkpoints of unfinished work
    ├── stability/level_XX/      RunDir.stability(n)
    ├── tokenizer/               RunDir.tokenizer     the run's tokenizer (masked-LM runs), for its tickets
    ├── hub_pushes.json          RunDir.hub_pushes    what reached the Hub (so a resumed run pushes the rest)
    └── summary.{csv,md}, *.png  RunDir.summary_csv / summary_md

No other module spells these names: ask a ``RunDir``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import LotteryError, UsageError
from .io import (
    atomic_dir,
    check_safetensors,
    file_sha256,
    read_json,
    read_safetensors,
    remove_stale_temporaries,
    save_state,
    temporary_of,
    write_json,
)
from .plotting import markdown_table
from .redact import without_secrets

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["RunDir", "LotteryResult", "RunLockedError", "last_complete_checkpoint", "drop_checkpoints_after",
           "RUN_CONFIG", "FLOW_FILE", "MASK_FILE", "MODEL_FILE", "METRICS_FILE"]

RUN_CONFIG = "lottery_config.json"
FLOW_FILE = "flow.json"
MASK_FILE = "mask.safetensors"
MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
LOCK_FILE = ".lottery_rg.lock"
REWIND_WEIGHTS = "rewind.safetensors"
INIT_WEIGHTS = "init.safetensors"
REWIND_STATE = "rewind_state.json"
_LEVEL_DIR = re.compile(r"^level_(\d+)$")
_TIMING_SUFFIXES = ("_runtime", "_per_second", "epoch", "masked_tokens")
CHECKPOINT_PREFIX = "checkpoint"  # transformers' PREFIX_CHECKPOINT_DIR: Trainer checkpoints are checkpoint-STEP

logger = logging.getLogger(__name__)


class RunLockedError(LotteryError, RuntimeError):
    """Another process writes this run directory (a refusal: wait, stop it, or choose another folder)."""

    exit_code = 2


_HELD: set[str] = set()  # run directories whose lock this process holds (real paths)


@dataclass(frozen=True)
class RunDir:
    """Paths and records of one run directory (nothing is created by asking)."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    def __fspath__(self) -> str:
        return os.fspath(self.root)

    # ------------------------------------------------------------------ files of the run
    @property
    def config(self) -> Path:
        return self.root / RUN_CONFIG

    @property
    def rewind(self) -> Path:
        return self.root / REWIND_WEIGHTS

    @property
    def init(self) -> Path:
        return self.root / INIT_WEIGHTS

    def initial_weights(self) -> Path:
        """θ_0: ``init.safetensors``, or ``rewind.safetensors`` for a run that rewinds to step 0."""
        if self.init.is_file():
            return self.init
        if int((self.read_config().get("lottery") or {}).get("rewind_steps", 0)) == 0:
            return self.rewind
        raise FileNotFoundError(f"{self.root} rewinds to a step k > 0 and holds no {INIT_WEIGHTS} (θ_0 is kept by "
                                f"lottery_rg 0.2 and later): only θ_k is available")

    @property
    def rewind_state(self) -> Path:
        return self.root / REWIND_STATE

    @property
    def flow(self) -> Path:
        return self.root / FLOW_FILE

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def hub_pushes(self) -> Path:
        return self.root / "hub_pushes.json"

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def summary_csv(self) -> Path:
        return self.root / "summary.csv"

    @property
    def summary_md(self) -> Path:
        return self.root / "summary.md"

    def checkpoints(self, name: str) -> Path:
        """Trainer checkpoints of unfinished work (a level, a retraining, a stability copy)."""
        return self.root / "checkpoints" / name

    def save_tokenizer(self, tokenizer: Any) -> None:
        """Keep the run's tokenizer in ``RUN/tokenizer`` (once), so tickets made from the run later carry it."""
        if tokenizer is None or (self.tokenizer / "tokenizer_config.json").is_file():
            return
        with atomic_dir(self.tokenizer) as tmp:
            tokenizer.save_pretrained(str(tmp))

    # ------------------------------------------------------------------ levels
    def level(self, n: int) -> Path:
        return self.root / f"level_{int(n):02d}"

    def mask(self, n: int) -> Path:
        return self.level(n) / MASK_FILE

    def model(self, n: int) -> Path:
        return self.level(n) / MODEL_FILE

    def metrics(self, n: int) -> Path:
        return self.level(n) / METRICS_FILE

    def write_level(self, n: int, mask: Mapping[str, torch.Tensor], model: nn.Module, record: dict) -> dict:
        """Write level ``n`` (its mask, the trained weights of ``model`` and its record) as one atomic folder.

        The record gets the SHA-256 of the weights file (``model_sha256``) and of the rewind point the level
        started from (``rewind_sha256``): a resumed run builds on a level only if both still match. Returns the
        record as written."""
        from .pruning.masks import save_mask

        with atomic_dir(self.level(n)) as tmp:
            save_mask(mask, tmp / MASK_FILE, metadata={"level": n})
            save_state(model, tmp / MODEL_FILE, metadata={"level": n})
            record = {**record, "model_sha256": file_sha256(tmp / MODEL_FILE)}
            if self.rewind.is_file():
                record["rewind_sha256"] = file_sha256(self.rewind)
            write_json(tmp / METRICS_FILE, record)
        return record

    def is_complete(self, n: int) -> bool:
        return self.metrics(n).is_file()

    def level_numbers(self, require: str = METRICS_FILE) -> list[int]:
        """Levels whose folder holds ``require`` (default: complete levels), in order."""
        if not self.root.is_dir():
            return []
        found = [int(m.group(1)) for p in self.root.iterdir() if p.is_dir() and (m := _LEVEL_DIR.match(p.name))]
        return sorted(n for n in found if (self.level(n) / require).is_file())

    def has_levels(self) -> bool:
        return self.root.is_dir() and any(_LEVEL_DIR.match(p.name) for p in self.root.iterdir())

    def record(self, n: int) -> dict:
        """The level record written by the trainer (``level``, ``density``, ``metrics``, digests, counts)."""
        return read_json(self.metrics(n))

    def records(self) -> list[dict]:
        return [self.record(n) for n in self.level_numbers()]

    def level_metrics(self, n: int) -> dict:
        """The level's metrics: the trainer's record holds them under ``metrics``; a flat object is taken whole."""
        path = self.metrics(n)
        if not path.is_file():
            return {}
        data = read_json(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object of metrics")
        return data["metrics"] if isinstance(data.get("metrics"), dict) else data

    # ------------------------------------------------------------------ the run as a whole
    def is_run(self) -> bool:
        return self.config.is_file()

    def read_config(self) -> dict:
        if not self.config.is_file():
            raise FileNotFoundError(f"{self.root} is not a lottery_rg run: no {RUN_CONFIG}")
        return read_json(self.config)

    def stability(self, n: int) -> Path:
        return self.root / "stability" / f"level_{int(n):02d}"

    def stability_records(self) -> list[Path]:
        return sorted((self.root / "stability").glob("level_*/stability*.json"))

    def result(self) -> LotteryResult:
        return LotteryResult(self.root, self.records())

    # ------------------------------------------------------------------ the settings lock
    def check_config(self, new: dict) -> str | None:
        """Refuse to continue a run recorded with other settings: ``new`` (what this invocation would record)
        must match ``lottery_config.json`` in the model, the lottery settings, the prunable tensors, the data,
        every locked flag and the steps per level. The levels would otherwise mix two experiments.

        Until a first level is complete there is nothing to protect: other settings are accepted (a run that
        crashed on a bad value is re-run with the corrected one), and the difference is returned so that the
        caller discards the unfinished work (:meth:`discard_unfinished`) before recording the new settings.
        Returns None when the settings match (or no run is recorded). Nothing is written here."""
        root, path = self.root, self.config
        if not path.is_file():
            if self.has_levels():
                raise UsageError(f"{root} holds level directories but no {path.name}: not a lottery_rg run; "
                                 f"use another --output_dir")
            return None
        difference = _config_difference(root, read_json(path), new)
        if difference is not None and self.level_numbers():
            raise UsageError(difference)
        return difference

    def record_config(self, new: dict, replace: bool = False) -> None:
        """Write ``lottery_config.json`` for a new run, or for the same run extended to more levels (fewer levels
        only read it); a run recorded before settings were locked gets them recorded now. ``replace``: the
        settings changed before any level was complete (:meth:`check_config`): ``new`` replaces the record."""
        old = read_json(self.config) if self.config.is_file() and not replace else None
        if old is None or old.get("levels", 0) < new["levels"] or "settings" not in old:
            record = new if old is None else dict(old, levels=max(old.get("levels", 0), new["levels"]),
                                                  settings=old.get("settings") or new["settings"])
            self.root.mkdir(parents=True, exist_ok=True)
            write_json(self.config, record)

    def discard_unfinished(self) -> list[Path]:
        """Remove the work of a run of which no level is complete — θ_0, the rewind point, unfinished Trainer
        checkpoints, the flow, the tokenizer (of the old model), stability copies, summaries — so that a run whose
        settings were corrected starts over. Returns what it removed; a run with a complete level is never
        touched."""
        if self.level_numbers():
            raise UsageError(f"{self.root} holds complete levels: its work is not discarded")
        removed = []
        for path in (self.rewind, self.init, self.rewind_state, self.flow, self.root / "checkpoints", self.tokenizer,
                     self.stability(0).parent, self.summary_csv, self.summary_md):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            else:
                continue
            removed.append(path)
        return removed

    def foreign_content(self) -> list[str]:
        """Entries of an existing folder that is not (yet) a run: what writing a run into it would mix with
        (the lock, and a first settings record a kill left half-written, are the run's own)."""
        if not self.root.is_dir() or self.is_run():
            return []
        own = {LOCK_FILE, RUN_CONFIG}
        return sorted(p.name for p in self.root.iterdir() if p.name != LOCK_FILE and temporary_of(p.name) not in own)

    def check_writable(self, flag: str = "--output_dir", *, run: bool = True) -> None:
        """Refuse, before anything is built or written, a folder that cannot take a run: a path through a file,
        read-only storage, a folder without write permission, or (``run``) a folder holding files that are not
        a lottery_rg run."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise UsageError(f"{flag} {root} is a file, not a folder: choose a folder (a new one, or a run's)")
        existing = root
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise UsageError(f"{flag} {root}: {existing} is a file, so no folder can be made under it; choose "
                             f"another path")
        if os.statvfs(existing).f_flag & os.ST_RDONLY:
            raise UsageError(f"{flag} {root} is on read-only storage ({existing}): a run writes its levels there, "
                             f"choose a writable folder. A finished run can still be read where it is (lottery-rg "
                             f"flow, lottery-rg stability, LotteryTicket.from_run)")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UsageError(f"{flag} {root}: no permission to write in {existing}; choose a folder you may write to")
        foreign = self.foreign_content() if run else []
        if foreign:
            raise UsageError(f"{root} holds files that are not a lottery_rg run ({', '.join(foreign[:5])}); nothing "
                             f"was written there. Choose an empty or new {flag}")

    # ------------------------------------------------------------------ one writer
    def locked_here(self) -> bool:
        """This process holds the run's lock (taken by :meth:`lock`)."""
        return os.path.realpath(self.root) in _HELD

    @contextlib.contextmanager
    def lock(self) -> Iterator[RunDir]:
        """Hold the run's write lock (an OS-level ``flock``: it dies with its holder, so ``kill -9`` leaves no
        stale lock). A second holder is refused at once with the first one's PID and host — another ``lock()`` in
        this process too; code that may run under a lock its process took first asks :meth:`locked_here`
        (``examples/run_imp.py`` takes it before it builds the trainer, and ``run_imp`` then needs not).

        What taking the lock created — the folder, the lock file — is removed again when it is released, if
        nothing else was written: a refused run leaves the disk as it found it."""
        key = os.path.realpath(self.root)
        made = _make_dirs(self.root)
        try:
            fd, created = _take_lock(self.lock_file, self.root)
        except BaseException:
            _remove_empty(self.root, made)
            raise
        _HELD.add(key)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
            yield self
        finally:
            _HELD.discard(key)
            if created:  # removed while still held: a process that opened it meanwhile sees another file and retries
                with contextlib.suppress(OSError):
                    self.lock_file.unlink()
            os.close(fd)  # releases the lock
            _remove_empty(self.root, made)

    # ------------------------------------------------------------------ verification
    def verify_level(self, n: int, model: nn.Module | None = None) -> dict:
        """Check a completed level before building on it: readable files, shapes that fit ``model``, the mask
        digest and the weights' SHA-256 stored in its record, finite weights, and every pruned position exactly
        zero. One read of each file. Returns the record; raises ``ValueError`` naming the damage and the fix."""
        from .pruning.checks import weight_problems
        from .pruning.masks import load_mask, mask_digest

        later = [m for m in self.level_numbers() if m > n]
        what = f"{self.level(n)}" + (f" and every later level ({', '.join(self.level(m).name for m in later)})"
                                     if later else "")
        fix = (f"delete {what} to recompute level {n} from level {n - 1}" if n else
               f"delete {what} to train the dense level again")
        try:
            record = self.record(n)
            if not isinstance(record, dict) or "density" not in record:
                raise ValueError(f"{self.metrics(n)} is not a level record")
            mask = load_mask(self.mask(n), model)
            digest = record.get("mask_digest")
            if digest is not None and mask_digest(mask) != digest:
                raise ValueError(f"{self.mask(n)} does not match the digest {digest} recorded in {self.metrics(n)}")
            found = check_safetensors(self.model(n))
            if model is not None:
                _check_fits(self.model(n), found, model.state_dict(keep_vars=True))  # shapes only: no copies
            state, sha = read_safetensors(self.model(n))
            if record.get("model_sha256") not in (None, sha):
                raise ValueError(f"{self.model(n)} is not the file the level wrote: its SHA-256 {sha[:16]}… differs "
                                 f"from {record['model_sha256'][:16]}… recorded in {self.metrics(n)} (changed since)")
            problems = weight_problems(state, mask)
            if problems:
                raise ValueError(f"{self.model(n)}: " + "; ".join(problems))
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(f"level {n} of {self.root} is damaged: {e}. {fix[0].upper() + fix[1:]}.") from None
        return record

    def verify_completed(self, model: nn.Module | None = None, rewind_steps: int = 0) -> dict[int, dict]:
        """Check every completed level (:meth:`verify_level`) and the rewind point the later levels start from
        (readable, finite, and the SHA-256 each level recorded for it); returns the completed levels' records."""
        from .pruning.checks import weight_problems

        done = {n: self.verify_level(n, model) for n in self.level_numbers()}
        if done:
            try:
                check_safetensors(self.rewind)
                state, sha = read_safetensors(self.rewind)
                changed = [n for n, r in done.items() if r.get("rewind_sha256") not in (None, sha)]
                if changed:
                    raise ValueError(f"its SHA-256 {sha[:16]}… differs from the one recorded with level "
                                     f"{changed[0]} in {self.metrics(changed[0])} (changed since)")
                problems = weight_problems(state)
                if problems:
                    raise ValueError("; ".join(problems))
                if rewind_steps > 0:
                    read_json(self.rewind_state)
            except (ValueError, FileNotFoundError) as e:
                raise ValueError(f"the rewind point {self.rewind} of {self.root} is damaged: {e}. Delete {self.root} "
                                 f"(every level depends on it) to start again") from None
        return done

    def remove_stale_temporaries(self) -> list[Path]:
        """Remove what interrupted writers left in the run (``flow.json.tmp<pid>``, ``level_XX.partial`` …);
        call it holding the run's lock. Returns the paths removed."""
        removed = remove_stale_temporaries(self.root)
        for path in removed:
            logger.info("removed %s (left by an interrupted run)", path)
        return removed


def last_complete_checkpoint(work: str | os.PathLike) -> Path | None:
    """The newest Trainer checkpoint in ``work`` that was written to the end, or None.

    ``Trainer`` writes a checkpoint folder file by file and ``trainer_state.json`` last, so a
    process killed while saving leaves a folder without a readable state: resuming from it
    would fail (or worse, load half a model). Such folders are skipped.
    """
    work = Path(work)
    if not work.is_dir():
        return None
    found = []
    for p in work.iterdir():
        step = p.name[len(CHECKPOINT_PREFIX) + 1:]
        if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX + "-") and step.isdigit():
            found.append((int(step), p))
    for _, p in sorted(found, reverse=True):
        try:
            json.loads((p / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if any((p / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")) or \
                any(p.glob("model*.safetensors")):
            return p
    return None


def drop_checkpoints_after(work: str | os.PathLike, last: Path | None) -> None:
    """Remove the checkpoint folders in ``work`` newer than ``last`` (half-written by a kill), so a resumed
    Trainer never mixes them in."""
    work = Path(work)
    if not work.is_dir():
        return
    keep = -1 if last is None else int(last.name.split("-")[1])
    for p in work.glob(CHECKPOINT_PREFIX + "-*"):
        step = p.name.split("-")[1]
        if p.is_dir() and step.isdigit() and int(step) > keep:
            logger.warning("removing incomplete checkpoint %s (interrupted while saving)", p)
            shutil.rmtree(p, ignore_errors=True)


def _make_dirs(root: Path) -> Path | None:
    """``root.mkdir(parents=True)``; returns the topmost folder it created (None if ``root`` existed)."""
    top = None
    for p in [*reversed(root.parents), root]:
        if not p.exists():
            top = top or p
    root.mkdir(parents=True, exist_ok=True)
    return top


def _remove_empty(root: Path, top: Path | None) -> None:
    """Remove ``root`` and its parents up to ``top`` (folders :func:`_make_dirs` created) while they are empty."""
    if top is None:
        return
    for p in [root, *root.parents]:
        try:
            p.rmdir()
        except OSError:
            return
        if p == top:
            return


def _take_lock(path: Path, root: Path) -> tuple[int, bool]:
    """Open and ``flock`` the lock file (creating it if needed); returns the descriptor and whether it was created.
    A holder removes the file it created when it lets go, so the locked file must still be the one at ``path``."""
    import fcntl

    while True:
        try:
            fd, created = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            try:
                fd, created = os.open(path, os.O_RDWR), False
            except FileNotFoundError:  # removed by its holder meanwhile
                continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            os.close(fd)
            try:
                h = json.loads(holder)
                who = f"process {h['pid']} on host {h['host']} (since {h['since']})"
            except (ValueError, KeyError, TypeError):
                who = "another process"
            raise RunLockedError(f"{root} is being written by {who}: one run directory has one writer. "
                                 f"Wait for it to finish, stop it, or use another --output_dir") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd, created
        os.close(fd)


def _config_difference(root: Path, old: dict, new: dict) -> str | None:
    """The first way ``new`` (this invocation's record) differs from ``old`` (``lottery_config.json``), as the
    one-line refusal that names it; None when they match."""
    old["lottery"] = {k: v for k, v in old.get("lottery", {}).items() if k not in ("levels", "push_levels")}
    for key in ("model", "lottery", "prunable"):
        if old.get(key) != new[key]:
            diff = _describe_difference(old.get(key), new[key])
            return (f"{root} holds a lottery run with different {key} settings ({diff}); use another --output_dir "
                    f"or delete that one")
    # the data a run trains on (data set, image size, sequence length…): levels must not mix two of them
    old_data, new_data = old.get("info") or {}, new.get("info") or {}
    shared = sorted((set(old_data) & set(new_data)) - {"command"})
    if any(old_data[k] != new_data[k] for k in shared):
        diff = _describe_difference({k: old_data[k] for k in shared}, {k: new_data[k] for k in shared})
        return f"{root} holds a lottery run on other data ({diff}); use another --output_dir or delete that one"
    old_settings = without_secrets(old.get("settings"))
    if old_settings:  # the model and data arguments are recorded by scripts that pass run_info (run_imp.py)
        recorded, given = set(old_settings) & _RUN_INFO_GROUPS, set(new["settings"]) & _RUN_INFO_GROUPS
        if recorded - given:
            return (f"{root} was made by examples/run_imp.py, which records its model and data arguments "
                    f"({', '.join(sorted(recorded))}), and this LotteryTrainer was given no run_info holding them: "
                    f"build it as run_imp.py does (setup = lottery_rg.tasks.prepare_task(model_args, data_args); "
                    f"LotteryTrainer(..., run_info=setup.info, **setup.trainer_kwargs())), or use another "
                    f"output_dir")
        if given - recorded:
            return (f"{root} was made by a LotteryTrainer built without run_info, so it records no model and data "
                    f"arguments ({', '.join(sorted(given))}): continue it the same way (without run_info), or use "
                    f"another --output_dir")
    changed = _changed_settings(old_settings, new["settings"])  # not settings
    if changed:
        return (f"{root} holds a run made with other settings, and a run's settings cannot change between "
                f"invocations (the levels would mix two experiments): " + "; ".join(changed)
                + ". Run with the recorded values, or use another --output_dir")
    steps = (old.get("training") or {}).get("steps_per_level")
    if steps != new["training"]["steps_per_level"]:
        return (f"{root} holds a run with {steps} optimizer steps per level, this one has "
                f"{new['training']['steps_per_level']} (the data, the batch size or the epochs differ); use another "
                f"--output_dir")
    return None


_RUN_INFO_GROUPS = {"model_arguments", "data_arguments"}


def _describe_difference(old, new) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        parts = [f"{k}: {old.get(k)!r} on disk vs {new.get(k)!r} now" for k in keys if old.get(k) != new.get(k)]
        return "; ".join(parts[:4])
    if isinstance(old, list) and isinstance(new, list):
        return f"{len(old)} prunable tensors on disk vs {len(new)} now"
    return f"{old!r} vs {new!r}"


def _changed_settings(old: dict | None, new: dict) -> list[str]:
    """One line per locked setting whose recorded value differs from this invocation's."""
    if not old:
        return []
    lines = []
    for group in sorted(set(old) | set(new)):
        a, b = old.get(group) or {}, new.get(group) or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                name = "number of processes" if group == "processes" else f"--{key}"
                lines.append(f"{name}: {a.get(key)!r} recorded, {b.get(key)!r} now")
    return lines


def _check_fits(path: Path, found: dict, state: dict) -> None:
    """``found`` (name -> shape of a file) fits the state dict; names left out must be tied to a stored one."""
    wrong = sorted(k for k in found if k not in state or tuple(state[k].shape) != found[k])
    stored = {state[k].data_ptr() for k in found if k in state}
    missing = sorted(k for k in state if k not in found and state[k].data_ptr() not in stored)
    if wrong or missing:
        raise ValueError(f"{path} does not fit the model: unknown or reshaped {wrong[:5]}, missing {missing[:5]}")


@dataclass
class LotteryResult:
    """What a lottery run produced: one row per level, and where it lives on disk."""

    output_dir: Path
    levels: list[dict] = field(default_factory=list)
    stability: list = field(default_factory=list)  # InstabilityResult per analysed level

    def rows(self) -> list[dict]:
        rows = []
        for rec in self.levels:
            m = rec.get("metrics", {})
            rows.append({"level": rec["level"], "density": rec["density"],
                         **{k: v for k, v in m.items() if k.startswith("eval_") and isinstance(v, (int, float))
                            and not k.endswith(_TIMING_SUFFIXES)}})
        return rows

    def to_markdown(self) -> str:
        rows = self.rows()
        if not rows:
            return "(no levels)"
        cols = list(dict.fromkeys(k for r in rows for k in r))
        return markdown_table(cols, [[_fmt(c, r.get(c)) for c in cols] for r in rows])

    def best_ticket(self, max_drop: float = 0.01, metric: str = "eval_accuracy") -> dict | None:
        """The sparsest level whose ``metric`` is within ``max_drop`` of the dense level's."""
        rows = [r for r in self.rows() if metric in r]
        if not rows:
            return None
        dense = rows[0][metric]
        ok = [r for r in rows if r[metric] >= dense - max_drop]
        return min(ok, key=lambda r: r["density"]) if ok else None


def _fmt(col, v):
    if v is None:
        return ""
    if col == "density" or "accuracy" in col:
        return f"{100 * v:.2f}%"
    return f"{v:.4g}" if isinstance(v, float) else str(v)
