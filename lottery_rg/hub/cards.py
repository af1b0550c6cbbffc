"""Model cards of tickets and flows, rendered from the templates in ``model_cards/`` with Hub metadata.

The card functions take the ticket or flow object and only read it, so this module sits below both.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import EvalResult

from ..io import card_template
from ..pruning.masks import surviving
from ..redact import redact_command
from ..run import LotteryResult

__all__ = ["TICKET_TAGS", "ticket_card"]  # flow cards: IMPFlow.save_pretrained (a data-set card)

TICKET_TAGS = ["lottery-ticket", "pruning", "sparsity", "imp-flow", "lottery_rg"]


class _Settings(dict):
    """Attribute access for Jinja (``lottery.pruning``), empty string for missing keys."""

    def __getattr__(self, key):
        return self.get(key, "")


def _flow_section(flow, shown=None) -> str:
    """The flow part of a card: eigenvalues next to their null models (controls, init-scale null), λ_i(n) per level.
    ``shown``: the flow's block-level :class:`~lottery_rg.flow.analysis.FlowReport`, when already computed."""
    from ..flow.analysis import flow_report

    shown = shown if shown is not None else flow_report(flow, "block")
    parts = [shown.table.to_markdown()]
    if shown.report is not None:
        parts.append("Null models — read the eigenvalues against them (one seed: the effects are descriptive):\n\n"
                     + shown.null_markdown())
    else:
        parts.append(shown.null_markdown())
    parts.append(shown.table.levels_markdown())
    return "\n\n".join(parts)


def ticket_card(ticket, repo_id: str | None = None, plots: list[str] | None = None, flow_shown=None) -> ModelCard:
    """The model card of a :class:`~lottery_rg.LotteryTicket` (metadata, levels, eigenvalues, plots, usage)."""
    arch = ticket.architecture()
    library = ticket.family.library
    name = arch.get("architecture", "model")
    dataset = ticket.info.get("dataset")
    task = ticket.family.task(ticket.model)
    eval_results = []
    current = next((r for r in ticket.metrics if r["level"] == ticket.level), None)
    acc = (current or {}).get("metrics", {}).get("eval_accuracy")
    trained = ticket.trained_weights() is not None
    if acc is not None and trained:  # model-index only for the weights in model.safetensors
        eval_results.append(EvalResult(task_type=task, dataset_type=dataset or "unknown",
                                       dataset_name=dataset or "unknown", metric_type="accuracy",
                                       metric_value=round(float(acc), 6),
                                       metric_name="masked-token accuracy" if task == "fill-mask" else "accuracy"))
    base = ticket.info.get("base_model")
    card_data = ModelCardData(
        library_name="lottery_rg", tags=sorted(set(TICKET_TAGS + [library, ticket.family.name])),
        base_model=base if base and "/" in str(base) else None,
        datasets=[dataset] if dataset and "/" in str(dataset) else None,
        pipeline_tag=task, model_name=f"{name}-lottery-ticket-level{ticket.level}",
        eval_results=eval_results or None,
    )
    flow = ticket.flow
    eigen = _flow_section(flow, flow_shown) if flow is not None and len(flow.levels) >= 3 else ""
    table = LotteryResult(Path("."), ticket.metrics).to_markdown() if ticket.metrics else "(not recorded)"
    headline = {}
    if acc is not None:
        headline["accuracy at this level" if task != "fill-mask" else "masked-token accuracy"] = f"{100 * acc:.2f} %"
    for key, what in (("stability", ""), ("stability_bn", ", BatchNorm recalibrated")):
        stab = ticket.info.get(key)
        if isinstance(stab, dict) and "instability" in stab:
            headline[f"instability to SGD noise (linear mode connectivity{what})"] = (
                f"{stab['instability']:.2f} points ({'stable' if stab.get('stable') else 'unstable'})")
    dense = next((r for r in ticket.metrics if r["level"] == 0), None)
    dense_acc = (dense or {}).get("metrics", {}).get("eval_accuracy")
    if dense_acc is not None:
        headline["dense accuracy (level 0)"] = f"{100 * dense_acc:.2f} %"
    counts = surviving(ticket.mask)
    return ModelCard.from_template(
        card_data, template_path=card_template("ticket_card.md"), model_name=card_data.model_name,
        architecture=name, family=ticket.family.name, library=library, dataset=dataset, level=ticket.level,
        levels=max((r["level"] for r in ticket.metrics), default=ticket.level), density=ticket.density,
        surviving=sum(counts.values()), prunable_total=sum(m.numel() for m in ticket.mask.values()),
        lottery=_Settings(ticket.lottery), headline_metrics=headline, levels_table=table, eigen_table=eigen,
        plots=plots or [], command=redact_command(ticket.info["command"]) if ticket.info.get("command")
        else "(not recorded)",
        repo_id=repo_id or "<this folder or repo id>", model_weights="trained" if trained else "rewind",
        has_tokenizer=getattr(ticket, "tokenizer", None) is not None,
        **ticket.family.card_details(ticket.model),
    )
