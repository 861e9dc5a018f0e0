"""Compiled ("fused") masked step for the Adam family: ``fused=`` on Magma/SkipUpdate.

The eager path (``magma.rules``) is a chain of foreach kernels, each a full pass over
memory. Here one masked tensor's whole step is one compiled call, ``tensor_step``: the
dense moment update and Magma's score in one pass, then (for a survivor) the parameter
update in a second. Which bases and settings qualify (``FUSED_BASES``), and how it is
tested, is in the README ("Fused step").

The graph is compiled with dynamic shapes from plain tensors (a parameter is passed
detached: dynamo pins a ``Parameter``'s shape), so a process compiles one graph per tensor
rank and setting (base kind, flags, survivor or not), whatever the model's shapes. Where
the compiler backend fails (no C compiler or Triton) or dynamo's recompile limit is hit,
that call runs the same function eagerly (after a backend failure, every later step takes
the eager foreach path), and the optimizer warns once per cause (``FusedFallbackWarning``)
and counts it in its telemetry (``eager_fallback``): never a silent slow path.

Masks are known on the host, so a masked-out block's parameter is not read or written at
all (its gradient, moments and score still are: Algorithm 1 keeps them dense).
Hyperparameters are Python floats, which dynamo traces as symbols (not constants).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from magma.bases import FUSED_BASES as FUSED_BASES  # re-exported: magma.fused.FUSED_BASES
from magma.replicas import broadcastable, slice_mean
from magma.rules import rule_for
from magma.rules.adam import AdamRule
from magma.rules.base import (
    ParamGroup,
    UpdateRule,
    bias_corrections,
    decay_skipped_,
    step_sizes,
)
from magma.rules.cautious_adamw import CAUTION_FLOOR, CautiousAdamWRule
from magma.rules.laprop import LaPropRule

_TINY = torch.finfo(torch.float32).tiny

#: the rules of the bases whose masked step the kernels compile (``FUSED_BASES``, named in
#: ``magma.bases``): what ``magma.rules.rule_for`` gives for those exact types
_FUSED_RULES = (AdamRule, CautiousAdamWRule, LaPropRule)
#: the update each fused rule applies, the ``kind`` of ``tensor_step``
KINDS = ("adam", "cautious", "laprop")


class FusedFallbackWarning(RuntimeWarning):
    """The compiled masked step could not compile a call and ran it eagerly: the same
    math, several times slower."""


def _seen(
    param: Tensor, grad: Tensor, weight_decay: float, *, maximize: bool, coupled_decay: bool
) -> Tensor:
    """The gradient as the base's moments see it."""
    g = -grad if maximize else grad
    return g + weight_decay * param if coupled_decay else g


def _alignment(mu: Tensor, g: Tensor, tau: float, *, replicated: bool) -> Tensor:
    """sigmoid(cos(mu, g) / tau) in float32: one value, or one per replica (dim 0)."""
    mu, g = mu.float(), g.float()
    if replicated:
        mu, g = mu.reshape(mu.shape[0], -1), g.reshape(g.shape[0], -1)
        norms = mu.square().sum(1).sqrt() * g.square().sum(1).sqrt()
        return torch.sigmoid((mu * g).sum(1) / norms.clamp_min(_TINY) / tau)
    norms = mu.square().sum().sqrt() * g.square().sum().sqrt()
    return torch.sigmoid((mu * g).sum() / norms.clamp_min(_TINY) / tau)


def _moments(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Tensor | None,
    own_moment: Tensor | None,
    previous: Tensor | None,
    bc2_sqrt: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    own_beta: float,
    tau: float,
    ema: float,
    *,
    kind: str,
    maximize: bool,
    coupled_decay: bool,
    replicated: bool,
    previous_momentum: bool,
) -> Tensor | None:
    """The dense part: the base's moments from g (as the base sees it), and s_t from
    ``own_moment`` (the wrapper's EMA of g, factor ``own_beta``) or else ``exp_avg``: as
    updated with g, or with ``previous_momentum`` as it was before (mu_{t-1})."""
    g = _seen(param, grad, weight_decay, maximize=maximize, coupled_decay=coupled_decay)
    fresh = None
    if previous is not None and previous_momentum:
        fresh = _alignment(
            exp_avg if own_moment is None else own_moment, g, tau, replicated=replicated
        )
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    if kind == "laprop":
        exp_avg.lerp_(g / ((exp_avg_sq.sqrt() + eps * bc2_sqrt) / bc2_sqrt), 1 - beta1)
    else:
        exp_avg.lerp_(g, 1 - beta1)
    if max_exp_avg_sq is not None:
        max_exp_avg_sq.copy_(torch.maximum(max_exp_avg_sq, exp_avg_sq))
    if previous is None:
        return None
    mu = own_moment.lerp_(g, 1 - own_beta) if own_moment is not None else exp_avg
    if fresh is None:
        fresh = _alignment(mu, g, tau, replicated=replicated)
    return torch.where(previous.isnan(), fresh, previous * ema + fresh * (1 - ema))


def survivor_update(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    second: Tensor,
    kept: Tensor | None,
    step_size: float | Tensor,
    bc2_sqrt: float | Tensor,
    scale: float | Tensor,
    eps: float,
    weight_decay: float,
    decay: float,
    skip_decay: float,
    *,
    kind: str,
    maximize: bool,
    coupled_decay: bool,
    replicated: bool,
) -> None:
    """theta <- theta * (1 - c * decay) - c * Delta from the updated moments (``second``:
    v, or its running max under amsgrad); ``kept`` (replicas) multiplies c per replica,
    0 for a dropped one, whose slice decays by ``skip_decay`` (``decay_on_skip``) instead. C-AdamW
    keeps Delta where it agrees in sign with g (as the moments saw it), rescaled by
    1 / max(share kept, CAUTION_FLOOR) per replica's slice."""
    c = scale if kept is None else broadcastable(kept * scale, param.dim())
    if kind == "laprop":
        update = (c * step_size) * exp_avg.float()
    else:
        update = (c * step_size) * exp_avg.float() / (second.float().sqrt() / bc2_sqrt + eps)
    if kind == "cautious":
        g = _seen(param, grad, weight_decay, maximize=maximize, coupled_decay=coupled_decay)
        agree = (exp_avg * g > 0).float()
        share = slice_mean(agree) if replicated else agree.mean()
        update = update * (agree / share.clamp_min(CAUTION_FLOOR))
    factor = 1 - c * decay
    if kept is not None:
        factor = factor - broadcastable(1 - kept, param.dim()) * skip_decay
    param.copy_(param.float() * factor - update)


def tensor_step(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Tensor | None,
    own_moment: Tensor | None,
    previous: Tensor | None,
    step_size: float | Tensor,
    bc2_sqrt: float | Tensor,
    scale: float | None,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decay: float,
    own_beta: float,
    tau: float,
    ema: float,
    *,
    kind: str,
    maximize: bool,
    coupled_decay: bool,
    apply: bool,
    replicated: bool,
    previous_momentum: bool,
) -> Tensor | None:
    """One masked tensor's step of Algorithm 1 for an Adam-family base; the new float32
    score s_t when ``previous`` (s_{t-1}, NaN where there is none yet) is given.

    The moments and score, then with ``apply`` (a survivor) the update with c = ``scale``
    or, when None, s_t (Magma's damping). ``decay`` = lr * wd where the base decouples it;
    ``step_size`` = lr / bc1 and ``bc2_sqrt`` = sqrt(bc2) come from the host or foreach
    (not computed here: a scalar power in the graph is evaluated per vector of elements).
    ``kind``: one of ``KINDS``; LaProp's ``exp_avg`` averages g / (sqrt(v / bc2) + eps).
    ``replicated``: scores per replica (dim 0); the update is then a second call,
    ``survivor_update`` (inductor's CPU code generator fails on a moment written and
    reduced per replica in one graph), so ``apply`` must be False. ``previous_momentum``:
    the cosine reads the first moment before this step's update (``momentum="previous"``).
    """
    score = _moments(
        param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, own_moment, previous, bc2_sqrt,
        beta1, beta2, eps, weight_decay, own_beta, tau, ema,
        kind=kind, maximize=maximize, coupled_decay=coupled_decay, replicated=replicated,
        previous_momentum=previous_momentum,
    )  # fmt: skip
    if apply:
        survivor_update(
            param, grad, exp_avg, exp_avg_sq if max_exp_avg_sq is None else max_exp_avg_sq,
            None, step_size, bc2_sqrt, score if scale is None else scale,
            eps, weight_decay, decay, 0.0,
            kind=kind, maximize=maximize, coupled_decay=coupled_decay, replicated=False,
        )  # fmt: skip
    return score


@functools.cache
def _compiled(kernel: Callable[..., Tensor | None]) -> Callable[..., Tensor | None]:
    """Compiled on first use, so importing magma does not load the compiler stack.
    ``fullgraph``: a recompile-limit hit raises (``FailOnRecompileLimitHit``) instead of
    silently running the frame eagerly. ``cpp.dynamic_threads``: on CPU every shape runs
    multi-threaded, however small the tensor the graph was first compiled for."""
    return torch.compile(
        kernel, dynamic=True, fullgraph=True, options={"cpp.dynamic_threads": True}
    )


#: why the compiler backend cannot compile in this process, once it has failed
_backend_failure: list[str] = []


def backend_failure() -> str | None:
    """Why the compiler backend failed in this process, or None: once it has, wrappers
    step their buckets on the eager foreach path instead (the same math, fewer launches
    than this module's kernels run one by one)."""
    return _backend_failure[0] if _backend_failure else None


def run_compiled(
    kernel: Callable[..., Tensor | None], *args: object, **kwargs: object
) -> tuple[Tensor | None, str | None]:
    """``kernel`` (one of this module's) compiled; eager where it cannot be. Returns its
    result and, for an eager call, why (a failed backend stays failed for the process; a
    recompile-limit hit is per graph, so other tensors' calls stay compiled)."""
    from torch._dynamo import exc as dynamo_exc  # (not at import: it loads the compiler)

    if not _backend_failure:
        try:
            return _compiled(kernel)(*args, **kwargs), None
        except dynamo_exc.BackendCompilerFailed as exc:
            first_line = (str(exc).strip() or repr(exc)).splitlines()[0]
            _backend_failure.append(f"the compiler backend failed ({first_line[:300]})")
        except dynamo_exc.FailOnRecompileLimitHit:
            limit = torch._dynamo.config.recompile_limit
            return kernel(*args, **kwargs), f"dynamo's recompile_limit ({limit}) was hit"
    return kernel(*args, **kwargs), _backend_failure[0]


def supports(optimizer: Optimizer, group: ParamGroup) -> bool:
    """Whether the fused kernels reproduce the base's math for this group."""
    return type(rule_for(optimizer, group)) in _FUSED_RULES


def masked_step(
    rule: UpdateRule,
    group: ParamGroup,
    params: list[Tensor],
    states: list[dict[str, Tensor]],
    keep: list[bool] | list[tuple[bool, ...]],
    previous: list[Tensor] | None,
    own_moments: list[Tensor],
    own_beta: float,
    scale: float | None,
    tau: float,
    ema: float,
    *,
    replicated: bool = False,
    previous_momentum: bool = False,
    decay_on_skip: bool = False,
) -> tuple[list[Tensor] | None, list[str | None]]:
    """One masked step of a bucket whose states exist, for a base ``supports`` accepts
    (``rule``: its rule).

    ``keep``: the host mask per tensor. ``previous``: s_{t-1} per tensor (float32, NaN
    where there is none yet) when scores are needed, else None. ``own_moments``: the
    wrapper's first moments (EMA factor ``own_beta``) to score with, for a rule without
    ``first_moment_key``, else empty. ``scale``: the survivors' constant scale, or None
    for Magma's damping (each survivor's new s_t). Returns the new scores (or None) and,
    per tensor, why its call ran eagerly (None where it ran compiled).

    ``replicated``: dim 0 of each tensor indexes replicas; ``keep`` holds a bool per
    replica, scores are per replica, and a tensor with any replica kept is written whole,
    the others' slices scaled by 0. ``previous_momentum``: score with mu_{t-1}
    (``momentum="previous"``); ``decay_on_skip``: a dropped block (or replica's slice)
    still takes the decoupled decay, theta <- theta (1 - lr * wd).
    """
    kind = KINDS[_FUSED_RULES.index(type(rule))]
    beta1, beta2 = group["betas"]
    lr, eps, maximize = group["lr"], group["eps"], bool(group["maximize"])
    amsgrad = kind != "laprop" and bool(group["amsgrad"])
    weight_decay = float(group["weight_decay"])
    # the rule's decoupled lr * wd (LaProp, C-AdamW, AdamW), or None where Adam folds
    # weight_decay into g
    decoupled = rule.decoupled_decay(group)
    coupled_decay = decoupled is None
    decay = 0.0 if decoupled is None else decoupled
    steps = [s["step"] for s in states]
    torch._foreach_add_(steps, 1)
    bc1s, bc2_sqrts = bias_corrections(steps, beta1, beta2)
    sizes = step_sizes(lr, bc1s)
    skip_decay = decay if decay_on_skip else 0.0
    dropped: list[Tensor] = []
    scores: list[Tensor] = []
    fallbacks: list[str | None] = []
    # no "duck" sizes: a graph first compiled for a square matrix serves every matrix
    with torch.fx.experimental._config.patch(use_duck_shape=False):
        for i, (q, state) in enumerate(zip(params, states, strict=True)):
            param, step_size, bc2_sqrt = q.detach(), sizes[i], bc2_sqrts[i]
            second = state["max_exp_avg_sq"] if amsgrad else None
            apply = any(keep[i]) if replicated else bool(keep[i])
            score, fallback = run_compiled(
                tensor_step,
                param, q.grad, state["exp_avg"], state["exp_avg_sq"], second,
                own_moments[i] if own_moments else None,
                previous[i] if previous is not None else None,
                step_size, bc2_sqrt, scale, beta1, beta2, eps, weight_decay, decay,
                own_beta, tau, ema,
                kind=kind, maximize=maximize, coupled_decay=coupled_decay,
                apply=apply and not replicated, replicated=replicated,
                previous_momentum=previous_momentum,
            )  # fmt: skip
            if not apply:
                dropped.append(param)
            if replicated and apply:
                kept = torch.tensor(keep[i], dtype=torch.float32).to(q.device)
                _, update_fallback = run_compiled(
                    survivor_update,
                    param, q.grad, state["exp_avg"],
                    state["exp_avg_sq"] if second is None else second, kept,
                    step_size, bc2_sqrt, score if scale is None else scale,
                    eps, weight_decay, decay, skip_decay,
                    kind=kind, maximize=maximize, coupled_decay=coupled_decay, replicated=True,
                )  # fmt: skip
                fallback = fallback or update_fallback
            fallbacks.append(fallback)
            if score is not None:
                scores.append(score)
    decay_skipped_(dropped, skip_decay)
    return (scores if previous is not None else None), fallbacks
