"""The base optimizers the tests run, one ``OptimizerInfo`` each (in the spirit of torch's
``torch/testing/_internal/common_optimizers.py``): the tests parametrise over this registry
instead of keeping their own tables of bases.

``OPTIMIZERS`` holds every base the library has a rule for (``magma.rules.rule_for``), one
per ``worker.contract.Base`` and in its order; ``GENERIC`` stands in for every other
optimizer (the wrapper's generic path). What an entry records and where it comes from:

- the name (``Base``'s value) and the class, by the qualified name ``worker.contract``
  gives it (``BASE_CLASSES``), resolved on first use: importing this module loads no torch;
- how to build it: ``build`` (the class with ``defaults``, the hyperparameters the
  equivalence tests use, and any overrides) and ``configs`` (the defaults, then each
  flag combination the tests run, with its test id);
- whether it has a fused step: its name in ``magma.bases.FUSED_BASES``, never restated;
- its first moment mu as tests/reference.py reads it: the state entry that is an EMA of g,
  or None where the wrapper keeps its own EMA; and whether its decay is coupled (in g);
- what else the tests need of it (Muon: 2-D parameters only, an update orthogonalised in
  bfloat16) and the tolerances of the equivalence tests;
- how it steps S replicas stacked along dim 0 (tests/test_replicas.py): ``build_replicated``,
  with another class where the base's own cannot (Muon: ``magma.BatchedMuon``) or told
  ``replicas`` where it reduces over a tensor (C-AdamW's caution).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from magma.bases import FUSED_BASES
from worker.contract import BASE_CLASSES, Base

if TYPE_CHECKING:
    from torch.optim import Optimizer


@dataclass(frozen=True)
class OptimizerInput:
    """One configuration of a base: keyword arguments over its ``defaults``, and the suffix
    of its test id ("" for the defaults alone)."""

    desc: str
    kwargs: Mapping[str, Any]


DEFAULTS_ONLY = OptimizerInput("", {})


@dataclass(frozen=True)
class OptimizerInfo:
    #: the base as ``worker.contract.Base`` names it ("adagrad-generic" for ``GENERIC``)
    name: str
    #: its class, qualified as ``magma.bases`` names classes ("torch.optim.AdamW")
    library_name: str
    #: the hyperparameters the equivalence tests build it with
    defaults: Mapping[str, Any]
    #: further configurations the equivalence tests run: the flags its rule branches on
    inputs: tuple[OptimizerInput, ...] = ()
    #: the state entry that is an EMA (or running sum) of g, mu for Magma's score; None:
    #: the wrapper keeps its own EMA of g
    first_moment: str | None = None
    #: a hyperparameter without which ``first_moment`` is not kept (SGD: momentum)
    first_moment_needs: str | None = None
    #: whether weight decay is L2, added to the gradient the moments see ...
    coupled_decay: bool = False
    #: ... unless this group flag is set (Adam: decoupled_weight_decay)
    decoupled_flag: str | None = None
    #: only 2-D parameters (Muon); the tests give the rest to an AdamW
    matrices_only: bool = False
    #: the update is computed in bfloat16 (Muon's Newton-Schulz): the equivalence tests run
    #: fewer steps and re-sync the reference after each, as one bf16 ulp drifts chaotically
    bf16_update: bool = False
    #: the equivalence tests' tolerances (float32 reordering error)
    atol: float = 1e-6
    rtol: float = 1e-5
    #: the class that steps S replicas stacked along dim 0, where not ``library_name``
    replicated_name: str | None = None
    #: whether that class must be told ``replicas`` (it reduces over a whole tensor)
    takes_replicas: bool = False

    @property
    def base(self) -> Base | None:
        """The worker's base, or None for ``GENERIC``."""
        return Base(self.name) if self.name in Base.values() else None

    @property
    def fused(self) -> bool:
        """Whether magma's compiled (fused) masked step takes it."""
        return self.library_name in FUSED_BASES

    @property
    def optim_cls(self) -> type[Optimizer]:
        return _resolve(self.library_name)

    @property
    def replicated_cls(self) -> type[Optimizer]:
        return _resolve(self.replicated_name or self.library_name)

    @property
    def tol(self) -> dict[str, float]:
        return {"rtol": self.rtol, "atol": self.atol}

    def build(self, params: Iterable[Any], **kwargs: Any) -> Optimizer:
        """The base over ``params`` with its ``defaults``, ``kwargs`` overriding them."""
        return self.optim_cls(params, **{**self.defaults, **kwargs})

    def build_replicated(self, params: Iterable[Any], replicas: int, **kwargs: Any) -> Optimizer:
        """``build`` for parameters stacking ``replicas`` replicas along dim 0."""
        told = {"replicas": replicas} if self.takes_replicas else {}
        return self.replicated_cls(params, **{**self.defaults, **kwargs, **told})

    def configs(self) -> tuple[OptimizerInput, ...]:
        """The defaults alone, then every further configuration."""
        return (DEFAULTS_ONLY, *self.inputs)

    def config_id(self, config: OptimizerInput) -> str:
        return f"{self.name}-{config.desc}" if config.desc else self.name

    def moment_key(self, group: Mapping[str, Any]) -> str | None:
        """The state entry that is mu for a param group of this base, or None."""
        if self.first_moment_needs is not None and not group[self.first_moment_needs]:
            return None
        return self.first_moment

    def couples_decay(self, group: Mapping[str, Any]) -> bool:
        """Whether the group's weight decay is added to the gradient the moments see."""
        if self.decoupled_flag is not None and group.get(self.decoupled_flag, False):
            return False
        return self.coupled_decay


def _resolve(qualified: str) -> type[Optimizer]:
    module, name = qualified.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _info(base: Base, **fields: Any) -> OptimizerInfo:
    return OptimizerInfo(name=base.value, library_name=BASE_CLASSES[base], **fields)


_DECAYED = {"lr": 1e-2, "weight_decay": 0.1}

#: every base the library has a rule for, in ``worker.contract.Base`` order
OPTIMIZERS: tuple[OptimizerInfo, ...] = (
    _info(
        Base.adam,
        defaults={"lr": 1e-2},
        inputs=(
            OptimizerInput("l2-amsgrad", {"weight_decay": 0.1, "amsgrad": True}),
            OptimizerInput("maximize", {"maximize": True}),
        ),
        first_moment="exp_avg",
        coupled_decay=True,
        decoupled_flag="decoupled_weight_decay",
    ),
    _info(Base.adamw, defaults=_DECAYED, first_moment="exp_avg"),
    _info(
        Base.rmsprop,
        defaults={"lr": 1e-3},
        inputs=(
            OptimizerInput(
                "centered-momentum-wd", {"centered": True, "momentum": 0.9, "weight_decay": 0.1}
            ),
        ),
        coupled_decay=True,
    ),
    # exp_avg is a momentum of g / (sqrt(v_hat) + eps), not of g: Magma keeps its own
    _info(Base.laprop, defaults=_DECAYED),
    _info(
        Base.muon,
        defaults={"lr": 0.02, "weight_decay": 0.1},
        first_moment="momentum_buffer",
        matrices_only=True,
        bf16_update=True,
        replicated_name="magma.BatchedMuon",
    ),
    _info(Base.c_adamw, defaults=_DECAYED, first_moment="exp_avg", takes_replicas=True),
    _info(
        Base.sgd,
        defaults={"lr": 0.05},
        inputs=(
            OptimizerInput("nesterov-wd", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
            OptimizerInput("momentum-dampening", {"momentum": 0.9, "dampening": 0.5}),
        ),
        first_moment="momentum_buffer",
        first_moment_needs="momentum",
        coupled_decay=True,
    ),
)

#: an optimizer without a rule: the wrapper's generic path (raw gradient, its own mu)
GENERIC = OptimizerInfo(
    name="adagrad-generic", library_name="torch.optim.Adagrad", defaults={"lr": 0.05}
)

#: every entry by name, ``GENERIC`` last
INFOS: dict[str, OptimizerInfo] = {info.name: info for info in (*OPTIMIZERS, GENERIC)}
#: the bases with a fused step, and those without
FUSED = tuple(info for info in OPTIMIZERS if info.fused)
UNFUSED = tuple(info for info in OPTIMIZERS if not info.fused)


def info_for(optimizer: object) -> OptimizerInfo | None:
    """The entry of a base optimizer's exact type (a subclass may change the math), or None:
    the generic path."""
    return next((info for info in OPTIMIZERS if type(optimizer) is info.optim_cls), None)
