"""What a workload kind's numbers are called and which metrics trace its progress.

Llama on C4 reports validation perplexity against tokens seen; the synthetic workloads
(quadratic, linear transformer) report a validation loss and train on no tokens, so
their curves run against the step.
"""

from __future__ import annotations

#: the workload kinds of ``worker.config.Workload``
WORKLOADS = ("llama-c4", "quadratic", "linear-transformer")
LANGUAGE = "llama-c4"


def _check(workload: str) -> str:
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {WORKLOADS}, got {workload!r}")
    return workload


def objective_name(workload: str) -> str:
    """``perplexity`` or ``loss``: what a study's objective measures."""
    return "perplexity" if _check(workload) == LANGUAGE else "loss"


def curve_metric(workload: str) -> str:
    """The metric key of the validation curve: ``val_ppl`` or ``val_loss``."""
    return "val_ppl" if _check(workload) == LANGUAGE else "val_loss"


def progress_metric(workload: str) -> str:
    """The metric key a curve's x axis uses: ``tokens``, or ``step`` where none are trained."""
    return "tokens" if _check(workload) == LANGUAGE else "step"
