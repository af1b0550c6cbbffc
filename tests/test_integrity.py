"""Nothing wrong is built on: a level file altered after it was written is refused on resume, a ticket with
NaN or unpruned weights is refused naming the tensor, a diverging level stops at once and is never recorded,
stale temporaries of lottery_rg's own writers are removed on resume."""

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from utils import image_setup, make_trainer, training_args

from lottery_rg import LotteryArguments, LotteryTicket, LotteryTrainer, RunDir
from lottery_rg.training.divergence import NonFiniteLossError


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("integrity") / "run"
    make_trainer(out, {"levels": 1, "rewind_steps": 1}).run_imp()
    return out


def _copy(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out, RunDir(out)


def test_levels_record_the_digests_of_their_weights(finished):
    run = RunDir(finished)
    from lottery_rg.io import file_sha256

    for n in (0, 1):
        rec = run.record(n)
        assert rec["model_sha256"] == file_sha256(run.model(n))
        assert rec["rewind_sha256"] == file_sha256(run.rewind)


@pytest.mark.parametrize("damage", ["flipped byte", "surviving weights set to 1e-6", "pruned positions not zero",
                                    "rewind point changed"])
def test_a_valid_but_altered_weights_file_is_refused_on_resume(finished, tmp_path, damage):
    out, run = _copy(finished, tmp_path)
    if damage == "flipped byte":
        data = bytearray(run.model(1).read_bytes())
        data[-5] ^= 0x40
        run.model(1).write_bytes(bytes(data))
        match = r"level 1 of .* is damaged: .*model.safetensors is not the file the level wrote"
    elif damage == "surviving weights set to 1e-6":
        state, mask = load_file(run.model(1)), load_file(run.mask(1))
        name = max(mask, key=lambda n: int(mask[n].sum()))
        flat, keep = state[name].view(-1), mask[name].view(-1).nonzero().view(-1)[:2000]
        flat[keep] = 1e-6
        save_file(state, run.model(1), metadata={"level": "1"})
        match = r"level 1 of .* is damaged: .*model.safetensors is not the file the level wrote"
    elif damage == "pruned positions not zero":
        state, mask = load_file(run.model(1)), load_file(run.mask(1))
        name = next(n for n in mask if not bool(mask[n].all()))
        state[name][~mask[name]] = 1e-6
        save_file(state, run.model(1), metadata={"level": "1"})
        rec = json.loads(run.metrics(1).read_text())
        rec.pop("model_sha256")  # a record without the digest (as a run of an earlier version wrote it)
        run.metrics(1).write_text(json.dumps(rec))
        match = rf"level 1 of .* is damaged: .*not zero where the mask prunes it: {name} \(\d+ of \d+ pruned"
    else:
        state = load_file(run.rewind)
        state["fc.bias"] += 1e-6
        save_file(state, run.rewind)
        match = r"the rewind point .* is damaged: its SHA-256 .* differs from the one recorded with level 0"
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(ValueError, match=match) as err:
        make_trainer(out, {"levels": 2, "rewind_steps": 1}).run_imp()
    assert "Delete" in str(err.value) or "delete" in str(err.value)
    assert not run.level(2).exists()
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_stale_temporaries_of_own_writers_are_removed_on_resume(finished, tmp_path):
    out, run = _copy(finished, tmp_path)
    stale = [out / "flow.json.tmp4242", out / "level_01" / "metrics.json.tmp77"]
    for p in stale:
        p.write_text("half")
    (out / "level_02.partial").mkdir()
    (out / "level_02.partial" / "mask.safetensors").write_bytes(b"\0" * 10)
    (out / ".partial-abc123").mkdir()
    keep = out / "notes.tmp"  # not a name our writers make: left alone
    keep.write_text("mine")
    make_trainer(out, {"levels": 1, "rewind_steps": 1}).run_imp()
    assert not any(p.exists() for p in stale)
    assert not (out / "level_02.partial").exists() and not (out / ".partial-abc123").exists()
    assert keep.read_text() == "mine"


# ---------------------------------------------------------------------------- tickets
@pytest.fixture(scope="module")
def saved_ticket(finished, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ticket") / "t"
    LotteryTicket.from_run(finished, level=1).save_pretrained(folder)
    return folder


def test_a_ticket_with_nan_weights_is_refused_naming_the_tensor_and_loads_with_the_opt_out(saved_ticket, tmp_path):
    d = tmp_path / "nan"
    shutil.copytree(saved_ticket, d)
    state = load_file(d / "model.safetensors")
    state["fc.weight"] = torch.full_like(state["fc.weight"], float("nan"))
    save_file(state, d / "model.safetensors")
    with pytest.raises(ValueError, match=r"model.safetensors: 1 of \d+ tensors hold NaN or infinite values: "
                                         r"fc.weight .*check_weights=False"):
        LotteryTicket.from_pretrained(d)
    ticket = LotteryTicket.from_pretrained(d, check_weights=False, weights="trained")
    assert torch.isnan(ticket.model.state_dict()["fc.weight"]).all()


def test_a_ticket_with_nonzero_pruned_weights_is_refused(saved_ticket, tmp_path):
    d = tmp_path / "unpruned"
    shutil.copytree(saved_ticket, d)
    state, mask = load_file(d / "rewind.safetensors"), load_file(d / "mask.safetensors")
    name = next(n for n in mask if not bool(mask[n].all()))
    state[name][~mask[name]] = 0.5
    save_file(state, d / "rewind.safetensors")
    with pytest.raises(ValueError, match=rf"rewind.safetensors: .*not zero where the mask prunes it: {name}"):
        LotteryTicket.from_pretrained(d)
    ticket = LotteryTicket.from_pretrained(d, check_weights=False)  # the mask zeroes them, as before
    assert not bool(ticket.model.state_dict()[name][~mask[name]].any())


def test_a_run_with_a_nan_level_gives_no_ticket(finished, tmp_path):
    out, run = _copy(finished, tmp_path)
    state = load_file(run.model(1))
    state["fc.bias"] = torch.full_like(state["fc.bias"], float("inf"))
    save_file(state, run.model(1))
    with pytest.raises(ValueError, match=r"level_01/model.safetensors: .*fc.bias"):
        LotteryTicket.from_run(out, level=1)


# ---------------------------------------------------------------------------- fail fast
def test_a_nan_learning_rate_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="--learning_rate nan"):
        make_trainer(tmp_path / "run", {"levels": 2}, learning_rate=float("nan")).run_imp()
    assert not (tmp_path / "run" / "level_00").exists()


def test_a_diverging_learning_rate_stops_the_first_level_at_once_and_writes_no_level(tmp_path):
    trainer = make_trainer(tmp_path / "run", {"levels": 2, "rewind_steps": 1}, learning_rate=1e30,
                           save_strategy="steps", save_steps=1)
    with pytest.raises(NonFiniteLossError) as err:
        trainer.run_imp()
    msg = str(err.value)
    # the loss of step 1 is computed before the first update: the first non-finite loss is a later step's
    assert re.search(r"level 0: the training loss is (nan|inf|-inf) at optimizer step [23] of 4", msg), msg
    assert "--learning_rate (now 1e+30)" in msg
    assert trainer.state.global_step <= 2
    run = RunDir(tmp_path / "run")
    assert not run.level(0).exists() and not run.rewind.exists() and not run.checkpoints("level_00").exists()


def test_a_loss_that_turns_infinite_later_stops_at_that_step(tmp_path):
    class Blowup(LotteryTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return loss * float("inf") if self.state.global_step == 2 else loss

    setup = image_setup()
    trainer = Blowup(args=training_args(tmp_path / "run"), lottery_args=LotteryArguments(levels=1),
                     run_info=setup.info, **setup.trainer_kwargs())
    with pytest.raises(NonFiniteLossError, match="level 0: the training loss is inf at optimizer step 3 of 4"):
        trainer.run_imp()
    assert not RunDir(tmp_path / "run").level(0).exists()


@pytest.mark.parametrize("logging_steps", [1, 100])
def test_on_a_device_the_first_bad_step_is_named_where_the_trainer_synchronises(tmp_path, monkeypatch,
                                                                                 logging_steps):
    """Where the loss is not read on the host each step (a GPU without logging_nan_inf_filter), the first bad
    step is kept on the device and reported at the next logging step, or when training ends."""
    from lottery_rg.training.divergence import DivergenceGuard

    class Blowup(LotteryTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return loss * float("inf") if self.state.global_step == 1 else loss

    monkeypatch.setattr(DivergenceGuard, "reads_on_host", lambda self, loss: False)
    setup = image_setup()
    trainer = Blowup(args=training_args(tmp_path / "run", logging_steps=logging_steps,
                                        logging_nan_inf_filter=False),
                     lottery_args=LotteryArguments(levels=1), run_info=setup.info, **setup.trainer_kwargs())
    with pytest.raises(NonFiniteLossError, match="level 0: the training loss is not finite at optimizer step 2 of 4"):
        trainer.run_imp()
    assert trainer.state.global_step == (2 if logging_steps == 1 else 4)
    assert not RunDir(tmp_path / "run").level(0).exists()
