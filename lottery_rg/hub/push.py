"""Pushing a run's tickets: arguments that never push checkpoints, early access checks, a record of pushes.

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

from ..io import read_json, write_json
from ..redact import redact, remember
from ..run import RunDir

__all__ = ["own_training_args", "check_push_access", "PushLedger", "push_summary", "LEDGER_NAME"]

LEDGER_NAME = RunDir(".").hub_pushes.name


def own_training_args(args, *, timm_model: bool):
    """A copy of ``args`` for LotteryTrainer, whether tickets are to be pushed, and the Hub token.

    The copy has ``push_to_hub=False`` (tickets, not Trainer checkpoint folders, go to the Hub) and no
    ``hub_token``: the Trainer pickles its arguments into every checkpoint (``training_args.bin``) and shows them
    to TensorBoard, so the token is handed back separately and remembered as a secret (:mod:`lottery_rg.redact`).
    For timm models the copy has ``remove_unused_columns=False`` (a timm model's ``forward(x)`` names no data-set
    column; the image transform makes ``pixel_values`` and ``labels`` from the raw columns) and, left at the
    default, ``ddp_find_unused_parameters=False`` (every parameter of a timm ResNet takes part in the loss: DDP
    need not search for unused ones, and warns when asked to).
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

    def record(self, target: str, level: int, commit: str | None) -> None:
        data = self._read()
        repos = data.setdefault("repos", {})
        repos.setdefault(self.repo_id, {})[target] = {
            "level": int(level), "commit": commit,
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
        write_json(self.path, redact(data))


def push_summary(ledger: PushLedger, failed: list[str]) -> str:
    pushed = ledger.pushed()
    done = ", ".join(f"{t} (level {e['level']})" for t, e in sorted(pushed.items())) or "nothing"
    text = f"Hub pushes to {ledger.repo_id}: pushed {done}"
    if failed:
        text += (f"; NOT pushed: {', '.join(sorted(set(failed)))}. The training results are intact: run the same "
                 f"command again to push what is missing")
    return text
