"""Pushing a run's tickets: arguments that never push checkpoints, early access checks, a record of pushes.

* :func:`push_run_tickets` — push a level's ticket (and with ``--push_levels`` every level not yet on the
  Hub) from a run directory; a failed push is logged and recorded, and never costs the training results.
* :func:`own_training_args` — a copy of the caller's ``TrainingArguments`` for LotteryTrainer
  (the Trainer itself never pushes; the caller's object is never changed).
* :func:`check_push_access` — with ``--push_to_hub``, the token and the repository are checked
  before any training.
* :class:`PushLedger` — ``RUN/hub_pushes.json`` (written atomically): what reached the Hub, so a
  resumed run pushes every level that is not there yet.
"""

from __future__ import annotations

import copy
import datetime
import logging
import os
from pathlib import Path

from ..io import read_json, write_json
from ..redact import redact, remember
from ..run import RunDir
from ..version import __version__
from .ticket import LotteryTicket, hub_progress_bars

__all__ = ["own_training_args", "check_push_access", "PushLedger", "push_summary", "push_run_tickets", "ticket_source",
           "LEDGER_NAME"]

logger = logging.getLogger(__name__)

LEDGER_NAME = RunDir(".").hub_pushes.name


def own_training_args(args, *, timm_model: bool):
    """A copy of ``args`` for LotteryTrainer, whether tickets are to be pushed, and the Hub token.

    The copy has ``push_to_hub=False`` (tickets, not Trainer checkpoint folders, go to the Hub; the caller's object
    is left as it is) and no ``hub_token``: the Trainer pickles its arguments into every checkpoint
    (``training_args.bin``) and shows them to TensorBoard, so the token is handed back separately and remembered
    as a secret (:mod:`lottery_rg.redact`). For timm models the copy has ``remove_unused_columns=False`` (a timm
    model's ``forward(x)`` names no data-set column; the image transform makes ``pixel_values`` and ``labels`` from
    the raw columns) and, left at the default, ``ddp_find_unused_parameters=False`` (every parameter of a timm
    classifier takes part in the loss: DDP need not search for unused ones, and warns when asked to). With
    ``push_to_hub`` the token and the repository are checked now (:func:`check_push_access`), before any training.
    """
    if args is None:
        return None, False, None
    push = bool(getattr(args, "push_to_hub", False))
    args = copy.copy(args)
    if push:
        args.push_to_hub = False
    token = getattr(args, "hub_token", None)
    if token is not None:
        remember(token)
        args.hub_token = None
    if push:
        check_push_access(args.hub_model_id or Path(args.output_dir).name, token=token, private=args.hub_private_repo)
    if timm_model:
        args.remove_unused_columns = False
        if getattr(args, "ddp_find_unused_parameters", False) is None:
            args.ddp_find_unused_parameters = False
    return args, push, token


def check_push_access(repo_id: str, *, token=None, private: bool | None = None) -> None:
    """Fail fast, before training: the token is accepted and the repository exists or can be created."""
    from huggingface_hub import HfApi
    from huggingface_hub import constants as hub_constants

    api = HfApi(token=token)
    try:
        user = api.whoami()
    except Exception as e:  # noqa: BLE001  (no token, a refused token, or no Hub at all)
        raise ValueError(f"--push_to_hub: the Hub at {hub_constants.ENDPOINT} did not accept the token "
                         f"({type(e).__name__}: {e}). Log in (`hf auth login`), pass --hub_token, or drop "
                         f"--push_to_hub; nothing was trained.") from e
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"--push_to_hub: cannot create or reach the repository {repo_id!r} as "
                         f"{user.get('name', '?')} on {hub_constants.ENDPOINT} ({type(e).__name__}: {e}); "
                         f"choose another --hub_model_id; nothing was trained.") from e


class PushLedger:
    """``RUN/hub_pushes.json``: ``{"repo_id": ..., "pushed": {target: {"level", "commit", "time"}}}``.

    ``target`` is a branch name (``level-03``) or ``main``. Entries of another repository are kept apart.
    """

    def __init__(self, run_dir, repo_id: str):
        self.path = RunDir(run_dir).hub_pushes
        self.repo_id = repo_id

    def _read(self) -> dict:
        if not self.path.is_file():
            return {}
        data = read_json(self.path)
        return data if isinstance(data, dict) else {}

    def pushed(self) -> dict:
        return dict((self._read().get("repos") or {}).get(self.repo_id) or {})

    def has(self, target: str, level: int | None = None) -> bool:
        entry = self.pushed().get(target)
        return entry is not None and (level is None or entry.get("level") == level)

    def record(self, target: str, level: int, commit: str | None, source: str | None = None) -> None:
        data = self._read()
        repos = data.setdefault("repos", {})
        repos.setdefault(self.repo_id, {})[target] = {
            "level": int(level), "commit": commit, "source": source,
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
        write_json(self.path, redact(data))

    def still_there(self, target: str, level: int, source: str, token=None) -> str | None:
        """The commit URL of an earlier push of the same content (``source``, see :func:`ticket_source`) to
        ``target``, if that commit is still the head of ``target`` on the Hub; else None (push again)."""
        from huggingface_hub import HfApi

        entry = self.pushed().get(target) or {}
        commit = entry.get("commit")
        if not commit or entry.get("level") != level or entry.get("source") != source:
            return None
        try:
            head = HfApi(token=token).repo_info(self.repo_id, revision=None if target == "main" else target).sha
        except Exception:  # noqa: BLE001  (cannot tell: push, and let the push say what is wrong)
            return None
        return commit if head and str(commit).rstrip("/").endswith(head) else None


def ticket_source(run_dir, level: int, branch: str | None) -> str:
    """A digest of everything a run's ticket of ``level`` is made from: every level's record (with its weights'
    and mask's digests), the flow, the level's stability records and the lottery_rg version. Two pushes with
    the same digest would upload the same folder."""
    import hashlib

    run = RunDir(run_dir)
    h = hashlib.sha256(f"{__version__}|{level}|{branch}".encode())
    # the stability records (JSON), not its weight copies: those are model-sized and the ticket does not carry them
    records = sorted(run.stability(level).glob("*.json"))
    for path in [run.metrics(n) for n in run.level_numbers()] + [run.flow] + records:
        if path.is_file():
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def push_summary(ledger: PushLedger, failed: list[str]) -> str:
    pushed = ledger.pushed()
    done = ", ".join(f"{t} (level {e['level']})" for t, e in sorted(pushed.items())) or "nothing"
    text = f"Hub pushes to {ledger.repo_id}: pushed {done}"
    if failed:
        text += (f"; NOT pushed: {', '.join(sorted(set(failed)))}. The training results are intact: run the same "
                 f"command again to push what is missing")
    return text


def push_run_tickets(run_dir: str | os.PathLike, repo_id: str, level: int | None = None, branch: str | None = None, *,
                     every_level: bool = False, token: str | None = None, private: bool | None = None,
                     commit_message: str | None = None, tokenizer=None, failures: list[str] | None = None,
                     raise_errors: bool = False, progress: bool = True) -> str | None:
    """Push a level's ticket of a run (default: the sparsest within one accuracy point of dense) to ``repo_id``.

    Pushes are recorded in ``RUN/hub_pushes.json``. The final push of a run (no ``level``, no ``branch``) with
    ``every_level`` first pushes every level branch (``level-XX``) not yet on the Hub, so a resumed run catches
    up on whatever failed before. A failed push is logged and its target added to ``failures`` (a success
    removes it), training results stay intact, and the final push logs what was and was not pushed;
    ``raise_errors=True`` raises instead. A target whose last push (recorded in the ledger) is still its head
    on the Hub and was made from the same run content is not pushed again. ``progress=False`` keeps the Hub's
    progress bars off. Returns the URL of the last push.
    """
    failures = [] if failures is None else failures
    ledger = PushLedger(run_dir, repo_id)
    final = level is None and branch is None
    targets: list[tuple[int | None, str | None]] = []
    if final and every_level:
        targets = [(r["level"], f"level-{r['level']:02d}") for r in RunDir(run_dir).records()
                   if not ledger.has(f"level-{r['level']:02d}", r["level"])]
    targets.append((level, branch))
    url = None
    for lv, br in targets:
        target = br or "main"
        try:
            ticket = LotteryTicket.from_run(run_dir, lv, tokenizer=tokenizer)
            source = ticket_source(run_dir, ticket.level, br)
            same = ledger.still_there(target, ticket.level, source, token=token)
            if same:
                url = same
                failures[:] = [t for t in failures if t != target]
                logger.info("the level-%d ticket is already on %s@%s (%s): nothing changed, not pushed again",
                            ticket.level, repo_id, target, same)
                continue
            with hub_progress_bars(progress):
                url = ticket.push_to_hub(repo_id, branch=br, token=token, private=private,
                                         commit_message=commit_message)
        except Exception as e:  # noqa: BLE001  (a network or Hub error must not cost the training results)
            if raise_errors:
                raise
            logger.warning("could not push %s of %s to %s: %s: %s (training results are intact; re-run the same "
                           "command to push it)", "the ticket" if lv is None else f"level {lv}", run_dir,
                           f"{repo_id}@{target}", type(e).__name__, e)
            failures.append(target)
            continue
        ledger.record(target, ticket.level, url, source)
        failures[:] = [t for t in failures if t != target]
        logger.info("pushed the level-%d ticket to %s%s", ticket.level, repo_id, f" (branch {br})" if br else "")
    if final:
        message = push_summary(ledger, failures)
        (logger.warning if failures else logger.info)("%s", message)
    return url
