"""Build or load the network a lottery run starts from, by name, folder or Hub repo id.

Images go through timm (a registered architecture such as ``resnet50`` or
``resnet20_cifar``; a timm-format folder or Hub repo via ``local-dir:`` / ``hf-hub:``);
masked-language models through ``transformers`` (``AutoModelForMaskedLM``). The same
code path serves offline tests (local folders, a local Hub endpoint) and real use.
"""

from __future__ import annotations

import json
import os

from torch import nn

__all__ = ["load_model", "read_model_config", "is_timm_config"]


def is_timm_config(cfg: dict) -> bool:
    return "architecture" in cfg and cfg.get("model_type") in (None, "timm_wrapper")


def read_model_config(name_or_path: str, revision: str | None = None) -> dict | None:
    """``config.json`` of a local folder or a Hub repo (None for a bare timm architecture name)."""
    import timm

    if timm.is_model(name_or_path):
        return None
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, "config.json")
        if not os.path.isfile(path):
            raise ValueError(f"{name_or_path} is a folder without config.json: not a model checkpoint")
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import HfHubHTTPError

        if name_or_path.count("/") != 1:
            raise ValueError(f"unknown model {name_or_path!r}: not a timm architecture (e.g. resnet18, "
                             f"resnet20_cifar), a local folder, or a Hub repo id 'org/name'")
        try:
            path = hf_hub_download(name_or_path, "config.json", revision=revision)
        except (HfHubHTTPError, OSError, ValueError) as e:
            raise ValueError(f"unknown model {name_or_path!r}: not a timm architecture, a local folder, or a "
                             f"reachable Hub repo ({type(e).__name__}: {e})") from e
    with open(path) as f:
        return json.load(f)


def load_model(name_or_path: str, *, num_labels: int | None = None, pretrained: bool = False,
               revision: str | None = None, model_kwargs: dict | None = None,
               image_size: int | None = None) -> nn.Module:
    """A timm image classifier or a transformers masked-LM, ready for :class:`LotteryTrainer`.

    ``model_kwargs`` go to ``timm.create_model`` (e.g. ``{"patch_size": 4}``) or ``from_pretrained``. A timm
    architecture named by its registered name is built for ``image_size`` when its family needs to know
    (a ViT's position embeddings: :meth:`ModelFamily.input_kwargs`).
    """
    import timm

    kwargs = dict(model_kwargs or {})
    if num_labels is not None:
        kwargs["num_classes"] = num_labels
    cfg = read_model_config(name_or_path, revision)
    try:
        if cfg is None:
            if image_size is not None:
                kwargs = {**_input_kwargs(name_or_path, kwargs, image_size), **kwargs}
            return timm.create_model(name_or_path, pretrained=pretrained, **kwargs)
        if is_timm_config(cfg):
            if os.path.isdir(name_or_path):
                source = f"local-dir:{os.path.abspath(name_or_path)}"
            else:
                source = f"hf-hub:{name_or_path}" + (f"@{revision}" if revision and revision != "main" else "")
            return timm.create_model(source, pretrained=True, **kwargs)
    except TypeError as e:  # a keyword the architecture does not take (or takes from its name, e.g. depth)
        if not model_kwargs:
            raise
        given = json.dumps(model_kwargs, default=str)
        raise ValueError(f"--model_kwargs {given}: {name_or_path} cannot be built with them ({e}); give keyword "
                         f"arguments of its constructor that its name does not fix") from None
    from transformers import AutoModelForMaskedLM

    return AutoModelForMaskedLM.from_pretrained(name_or_path, revision=revision, **(model_kwargs or {}))


def _input_kwargs(name: str, kwargs: dict, image_size: int) -> dict:
    """What the family of timm architecture ``name`` needs to accept ``image_size`` inputs, learnt from a
    copy built on the meta device (no memory; the random number generators are left as they were)."""
    import timm
    import torch

    from .families import family_of

    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        probe = timm.create_model(name, pretrained=False, **kwargs)
    try:
        family = family_of(probe)
    except ValueError:
        return {}  # the trainer names the missing family
    return family.input_kwargs(probe, image_size)
