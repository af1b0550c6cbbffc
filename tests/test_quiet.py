"""Quiet and true: per-step scalars of every level reach TensorBoard at growing steps, a second push of the same
ticket makes no second commit, a cached ticket loads without a word, Hub bars follow the Trainer's settings,
a flow comparison without uncertainties says so, a ticket with a custom prunable set loads back."""

import json

from utils import make_trainer

from lottery_rg import LotteryTicket, RunDir


def _scalars(run_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = []
    for folder in sorted(p for p in (run_dir / "runs").iterdir() if p.is_dir()):
        acc = EventAccumulator(str(folder), purge_orphaned_data=True)  # what TensorBoard itself shows
        acc.Reload()
        events += [(e.wall_time, e.step) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []
    return [step for _, step in sorted(events)]


def test_every_levels_steps_reach_tensorboard_at_the_level_step(tmp_path):
    trainer = make_trainer(tmp_path, {"levels": 2, "rewind_steps": 1}, report_to=["tensorboard"], logging_steps=1)
    trainer.run_imp()
    T, k = 4, 1  # 128 samples / batch 32; levels after the first start at step k
    steps = _scalars(tmp_path, "train/loss")
    # level n's optimizer step s is reported at n·T + s: level 0 at 1..4, level 1 at 6..8, level 2 at 10..12
    assert steps == [n * T + s for n in range(3) for s in range(1 if n == 0 else k + 1, T + 1)], steps
    assert _scalars(tmp_path, "train/density") == [T, 2 * T, 3 * T]
    # the Trainer's own record keeps the Trainer's own step
    assert [h["step"] for h in trainer.level_log_history[2] if "loss" in h] == [2, 3, 4]


def test_a_push_after_run_imp_makes_no_second_commit(hub, tmp_path):
    repo = hub.new_repo_id("push-once")
    trainer = make_trainer(tmp_path, {"levels": 1}, push_to_hub=True, hub_model_id=repo, hub_token=hub.token)
    trainer.run_imp()
    commits = hub.api().list_repo_commits(repo)
    url = trainer.push_to_hub()  # as the README shows
    assert hub.api().list_repo_commits(repo) == commits
    assert commits[0].commit_id in url
    # new content is pushed: a further level changes the ticket's source
    make_trainer(tmp_path, {"levels": 2}, push_to_hub=True, hub_model_id=repo, hub_token=hub.token).run_imp()
    assert len(hub.api().list_repo_commits(repo)) == len(commits) + 1


def test_a_cached_ticket_loads_without_a_word_and_bars_follow_the_trainer(hub, tmp_path, capfd, monkeypatch):
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    repo = hub.new_repo_id("quiet")
    trainer = make_trainer(tmp_path / "run", {"levels": 1}, hub_model_id=repo, hub_token=hub.token)
    trainer.run_imp()
    import sys

    # conftest sets HF_HUB_DISABLE_PROGRESS_BARS=1, read at import: unset it as a user's session has it
    monkeypatch.setattr(sys.modules["huggingface_hub.utils.tqdm"], "HF_HUB_DISABLE_PROGRESS_BARS", None)
    was_disabled = are_progress_bars_disabled()
    enable_progress_bars()  # as a user's session has them
    try:
        capfd.readouterr()
        trainer.push_to_hub()  # disable_tqdm=True in these tests: no bars
        out = capfd.readouterr()
        assert "\r" not in out.err + out.out and "%|" not in out.err + out.out, out
        LotteryTicket.from_pretrained(repo)  # downloads
        capfd.readouterr()
        LotteryTicket.from_pretrained(repo)  # from the cache
        out = capfd.readouterr()
        assert out.out == "" and out.err == "", out
        LotteryTicket.from_pretrained(repo, local_files_only=True)  # no Hub at all: from the cache, silently
        out = capfd.readouterr()
        assert out.out == "" and out.err == "", out
        assert not are_progress_bars_disabled()  # left as the user set them
    finally:
        if was_disabled:
            disable_progress_bars()


def test_a_ticket_with_a_custom_prunable_set_loads_back(tmp_path):
    trainer = make_trainer(tmp_path / "run", {"levels": 1, "prune_include": [r".*bn\d?\.weight$", r"conv.*weight$"]})
    trainer.run_imp()
    prunable = json.loads(RunDir(tmp_path / "run").config.read_text())["prunable"]
    assert any("bn" in n for n in prunable)
    ticket = LotteryTicket.from_run(tmp_path / "run")
    ticket.save_pretrained(tmp_path / "t")
    back = LotteryTicket.from_pretrained(tmp_path / "t")
    assert sorted(back.mask) == sorted(prunable) == sorted(ticket.mask)


def test_a_flow_comparison_without_uncertainties_cannot_be_judged():
    from test_flow import BLOCKS, exact_flow

    from lottery_rg import IMPFlow

    short = exact_flow(BLOCKS, levels=3)  # 2 level-to-level ratios: no bootstrap standard error
    other = short.to_dict()
    for r in other["levels"][1:]:
        r["surviving"]["layer1.0.weight"] = int(r["surviving"]["layer1.0.weight"] * 0.999)
    cmp = short.compare(IMPFlow.from_dict(other))
    assert cmp.verdict.startswith("cannot be judged: no uncertainties"), cmp.verdict
    assert not cmp.summary["same"] and "predicted to transfer between" not in cmp.verdict
    longer = exact_flow(BLOCKS, levels=6)
    assert not longer.compare(exact_flow(BLOCKS, levels=6)).verdict.startswith("cannot be judged")
