"""The base optimizers by name, importable without torch (the service's API process
validates ``fused_step`` with them and never loads torch).

``magma.fused`` compiles the masked step of exactly these; ``worker.contract`` derives its
``FUSED_STEP_BASES`` from them.
"""

from __future__ import annotations

#: the bases whose masked step the kernels of ``magma.fused`` compile, as qualified names:
#: those ``magma.rules.rule_for`` gives one of its ``_FUSED_RULES`` (exact types;
#: Adam/AdamW without differentiable=True)
FUSED_BASES: tuple[str, ...] = (
    "torch.optim.Adam",
    "torch.optim.AdamW",
    "magma.CAdamW",
    "magma.LaProp",
)
