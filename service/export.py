"""A study's best configuration, ready to reuse: as JSON or YAML with its provenance,
or as a Python snippet that builds the optimizer with the ``magma`` library.

The snippet mirrors ``worker/optimizers.py`` (the code the trial ran), so pasting it
gives the optimizer that produced the exported numbers.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from service import DISTRIBUTION
from studies.best import BestConfiguration
from studies.storage.models import Study
from worker.config import TrialConfig
from worker.contract import COMPONENT_LABELS, WorkloadKind
from worker.data.corpus import HUB_PREFIX, file_sha256, resolve_sources
from worker.data.tokenizer import BYTES, T5_SPIECE

FORMATS = ("json", "yaml", "python")
PACKAGES = (DISTRIBUTION, "torch", "transformers", "ray", "optuna")

BASE_CONSTRUCTORS = {
    "adam": "torch.optim.Adam({params}, lr={lr!r}, betas={betas!r}, weight_decay={wd!r})",
    "adamw": "torch.optim.AdamW({params}, lr={lr!r}, betas={betas!r}, weight_decay={wd!r})",
    "rmsprop": (
        "torch.optim.RMSprop({params}, lr={lr!r}, alpha={beta2!r}, eps=1e-08, weight_decay={wd!r})"
    ),
    "laprop": "magma.LaProp({params}, lr={lr!r}, betas={betas!r}, weight_decay={wd!r})",
    "c-adamw": "magma.CAdamW({params}, lr={lr!r}, betas={betas!r}, weight_decay={wd!r})",
    "sgd": "torch.optim.SGD({params}, lr={lr!r}, momentum={beta1!r}, weight_decay={wd!r})",
    "muon": (
        "torch.optim.Muon({params}, lr={lr!r}, weight_decay={wd!r}, momentum=0.95, "
        'adjust_lr_fn="match_rms_adamw")'
    ),
}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@lru_cache(maxsize=32)
def _hashes(
    train: tuple[str, ...] | None, validation: tuple[str, ...] | None, tokenizer: str
) -> dict[str, Any]:
    """Each file's SHA-256, as ``sha256sum`` prints it (hub sources are named, not hashed).
    Computed once per process for each data set: the files do not change under a study."""
    try:
        hashes: dict[str, Any] = {
            "train_sha256": _file_hashes(resolve_sources(list(train or ()), "train")),
            "validation_sha256": _file_hashes(
                resolve_sources(list(validation or ()), "validation")
            ),
        }
    except (OSError, ValueError) as exc:  # the data moved since the study ran
        hashes = {"unavailable": str(exc)}
    if tokenizer == BYTES:  # built in: no file to hash
        hashes["tokenizer_sha256"] = None
        return hashes
    try:
        hashes["tokenizer_sha256"] = file_sha256(tokenizer).hex()
    except OSError:
        hashes["tokenizer_sha256"] = None  # a hub tokenizer, identified by name
    return hashes


def _file_hashes(sources: list[str]) -> dict[str, str | None]:
    """``{file name: SHA-256}``; None for a hub stream, which has no one file."""
    return {
        Path(source).name if not source.startswith(HUB_PREFIX) else source: (
            None if source.startswith(HUB_PREFIX) else file_sha256(source).hex()
        )
        for source in sources
    }


def data_provenance(config: dict[str, Any]) -> dict[str, Any]:
    """Content hashes of the training data, tokenizer and model config (llama-c4 only)."""
    trial = TrialConfig(**config)
    if trial.workload != WorkloadKind.llama_c4:
        return {"workload": trial.workload, "generated": "synthetic data from the trial seed"}
    train = tuple(trial.train_files) if trial.train_files else None
    validation = tuple(trial.validation_files) if trial.validation_files else None
    return {
        "workload": trial.workload,
        "train_files": list(train) if train else "bundled C4 sample",
        "validation_files": list(validation) if validation else "bundled C4 sample",
        "tokenizer": trial.tokenizer or "bundled T5 spiece.model",
        # the hash recorded when the trial was configured: the model file that ran
        "model": trial.model,
        "model_sha256": trial.model_sha256,
        **_hashes(train, validation, trial.tokenizer or str(T5_SPIECE)),
    }


def best_document(
    study: Study, best: BestConfiguration, verdicts: Sequence[dict[str, Any]] = ()
) -> dict[str, Any]:
    """The export; ``verdicts``: the study's comparisons as ``/verdict`` gives them."""
    return {
        "study": {
            "id": study.id,
            "name": study.name,
            "objective": {"metric": study.metric, "mode": study.mode},
        },
        "configuration": best.configuration,
        "objective": best.objective,
        "objective_std": best.objective_std,
        "objectives": best.objectives,
        "trial_ids": best.trial_ids,
        "params": best.params,
        "config": best.config,
        "provenance": {
            "packages": package_versions(),
            "data": data_provenance(best.config),
        },
        "verdicts": list(verdicts),
    }


def render(document: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(document, indent=2)
    if fmt == "yaml":
        return yaml.safe_dump(document, sort_keys=False)
    return python_snippet(document)


def python_snippet(document: dict[str, Any]) -> str:
    config = TrialConfig(**document["config"])
    labels = COMPONENT_LABELS[config.components]
    names = repr(labels) if labels else "magma.COMPONENTS"
    values = {
        "lr": config.lr,
        "betas": tuple(config.betas),
        "beta1": config.betas[0],
        "beta2": config.betas[1],
        "wd": config.weight_decay,
    }
    header = [
        f"# Best configuration of study {document['study']['id']} "
        f"({document['study']['name']!r}), configuration {document['configuration']}:",
        f"# mean objective {document['objective']:.6g} over trials {document['trial_ids']}.",
        "# `model` is your torch.nn.Module; step every optimizer in `optimizers`.",
        "import torch",
        "",
        "import magma",
        "",
    ]
    masking = ""
    if config.variant != "dense":
        wrapper = "Magma" if config.variant == "magma" else "SkipUpdate"
        magma_only = (
            f", tau={config.tau!r}, score_init={config.score_init!r}, momentum={config.momentum!r}"
            if config.variant == "magma"
            else ""
        )
        masking = (
            f"p={config.p!r}{magma_only}, granularity={config.granularity!r}, "
            f"decay_on_skip={config.decay_on_skip!r}, seed={config.mask_seed}"
        )
    if config.base != "muon":
        base = BASE_CONSTRUCTORS[config.base].format(params="model.parameters()", **values)
        if config.variant == "dense":
            return "\n".join([*header, f"optimizers = [{base}]", ""])
        body = [
            f"optimizer = magma.{wrapper}(",
            f"    {base},",
            f"    params=magma.components(model, {names}),",
            f"    {masking},",
            ")",
            "optimizers = [optimizer]",
        ]
        return "\n".join([*header, *body, ""])
    # Muon takes the 2-D attention/MLP matrices and AdamW the rest, as the trial did.
    muon = BASE_CONSTRUCTORS["muon"].format(params="hidden", **values)
    adamw = BASE_CONSTRUCTORS["adamw"].format(params="rest", **values)
    body = [
        f"masked = magma.components(model, {names})",
        "hidden = [p for group in masked.values() for p in group if p.dim() == 2]",
        "rest = [p for p in model.parameters() if all(p is not h for h in hidden)]",
        f"optimizers = [{muon}, {adamw}]",
    ]
    if config.variant != "dense":
        body += [
            "masked_2d = {k: [p for p in ps if p.dim() == 2] for k, ps in masked.items()}",
            f"optimizers[0] = magma.{wrapper}(optimizers[0], params=masked_2d, {masking})",
        ]
    return "\n".join([*header, *body, ""])
