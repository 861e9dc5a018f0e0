"""The machinery shared by SkipUpdate and Magma: Algorithm 1 around any base optimizer.

Per step and masked block b:

    mu_t, nu_t <- base moments updated with g_t          (dense, every block)
    s_t        <- EMA of sigmoid(cos(mu_t, g_t) / tau)   (every block, Magma only)
    m_t        ~  Bernoulli(p)                           (the optimizer's own generator)
    theta      <- theta - scale_t * m_t * Delta_t        (Delta = the base's full update)

with scale = 1/p (SkipUpdate) or s_t (Magma). For the bases in ``magma.rules`` the
update is recomputed from the base's own state, so blocks whose mask is 0 do no
parameter work and nothing is copied. Any other optimizer takes a generic path:
snapshot the masked blocks, let the base step, then rescale or restore them. With
``fused`` (auto on CUDA), buckets of the Adam family (``magma.fused.FUSED_BASES``) run
the compiled kernels of magma.fused.
Parameters that are not masked are always stepped by the base itself, unchanged.

With ``replicas=S`` dim 0 of every masked tensor indexes S independent replicas: each
replica has its own generators (seeded as a single optimizer with its seed), scores and
masks, so replica r is masked exactly as a separate optimizer over its slices would mask
it. A tensor's survivors are then some of its slices, so its update goes through the
rule's ``direction`` times a per-replica multiplier (0 for a dropped replica).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from magma import fused as F
from magma import scores as S
from magma.choices import DEFAULTS, MOMENTA, SCORE_INIT_FIRST
from magma.replicas import broadcastable, check_replicas, check_stacked, replica_seeds
from magma.rules import rule_for
from magma.rules.base import ParamGroup, UpdateRule, buckets, decay_skipped_

SAMPLINGS = ("uniform", "alignment", "none")
OWN_MOMENT_BETA = 0.9
DEFAULT_LABEL = "masked"

#: a tensor's host mask: a bool, or with replicas one per replica
Keep = bool | tuple[bool, ...]


def _check_unit_interval(name: str, value: object, *, closed_low: bool) -> None:
    bounds = "[0, 1)" if closed_low else "(0, 1]"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not ((0.0 <= value < 1.0) if closed_low else (0.0 < value <= 1.0)):
        raise ValueError(f"{name} must be a number in {bounds}, got {value!r}")


def _check_score_init(value: object) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (value == SCORE_INIT_FIRST or (number and 0.0 <= value <= 1.0)):
        raise ValueError(
            f"score_init must be {SCORE_INIT_FIRST!r} or a number in [0, 1], got {value!r}"
        )


def _decay_dropped(params: list[Tensor], keeps: list[Tensor], skip_decay: float | Tensor) -> None:
    """theta <- theta (1 - lr * wd) where the mask dropped it (``decay_on_skip``), before
    the survivors' update is subtracted; nothing when ``skip_decay`` is 0."""
    if isinstance(skip_decay, float) and skip_decay == 0:
        return
    torch._foreach_mul_(params, [1 - (1 - keep) * skip_decay for keep in keeps])


def _labelled(params: Iterable[Tensor] | Mapping[str, Iterable[Tensor]]) -> dict[Tensor, str]:
    if isinstance(params, Tensor):
        raise TypeError("params must be an iterable of tensors or a mapping of them, got a Tensor")
    items = params.items() if isinstance(params, Mapping) else [(DEFAULT_LABEL, params)]
    labels: dict[Tensor, str] = {}
    for label, tensors in items:
        for t in tensors:
            if not isinstance(t, Tensor):
                raise TypeError(f"params must contain tensors, got {type(t).__name__}")
            labels.setdefault(t, str(label))
    return labels


class MaskedOptimizer(Optimizer):
    """Wraps an instantiated base optimizer; ``param_groups`` and ``state`` are the base's."""

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        p: float,
        params: Iterable[Tensor] | Mapping[str, Iterable[Tensor]] | None,
        granularity: str,
        seed: int | Sequence[int] | None,
        sampling: str,
        damping: bool,
        tau: float,
        ema: float,
        fused: bool | None = None,
        replicas: int | None = None,
        score_init: str | float = SCORE_INIT_FIRST,
        momentum: str = MOMENTA[0],
        decay_on_skip: bool = False,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer must be an instantiated torch.optim.Optimizer, "
                f"got {type(optimizer).__name__}"
            )
        if isinstance(optimizer, MaskedOptimizer):
            raise TypeError("optimizer is already masked; wrap the base optimizer once")
        _check_unit_interval("p", p, closed_low=False)
        if granularity not in S.GRANULARITIES:
            raise ValueError(f"granularity must be one of {S.GRANULARITIES}, got {granularity!r}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if not isinstance(tau, (int, float)) or isinstance(tau, bool) or not tau > 0:
            raise ValueError(f"tau must be a number > 0, got {tau!r}")
        _check_unit_interval("ema", ema, closed_low=True)
        _check_score_init(score_init)
        if momentum not in MOMENTA:
            raise ValueError(f"momentum must be one of {MOMENTA}, got {momentum!r}")
        if not isinstance(decay_on_skip, bool):
            raise ValueError(f"decay_on_skip must be True or False, got {decay_on_skip!r}")
        replicas = check_replicas(replicas)
        seeds = replica_seeds(seed, replicas)
        if fused is not None and not isinstance(fused, bool):
            raise ValueError(f"fused must be True, False or None (auto), got {fused!r}")

        owned = {q for group in optimizer.param_groups for q in group["params"]}
        if params is None:
            self._labels = dict.fromkeys(owned, DEFAULT_LABEL)
        else:
            self._labels = _labelled(params)
            if not self._labels:
                raise ValueError("params is empty: no tensors to mask")
            foreign = [q for q in self._labels if q not in owned]
            if foreign:
                raise ValueError(
                    f"params must be parameters of the base optimizer; {len(foreign)} "
                    f"tensor(s) of shape {tuple(foreign[0].shape)}... are not in its param_groups"
                )
        self.optimizer = optimizer
        self.p = float(p)
        self.tau = float(tau)
        self.ema = float(ema)
        self.granularity = granularity
        self.sampling = sampling
        self.damping = bool(damping)
        #: s_{t-1} of a block's first step: "first" (s_1 = s~_1) or a number in [0, 1]
        self.score_init: str | float = (
            score_init if score_init == SCORE_INIT_FIRST else float(score_init)
        )
        #: whether the cosine uses mu_t ("updated") or mu_{t-1} ("previous")
        self.momentum = momentum
        #: whether a masked-out block still takes the base's decoupled weight decay
        self.decay_on_skip = decay_on_skip
        #: dim 0 of every masked tensor indexes this many independent replicas, or None
        self.replicas = replicas
        #: the mask seed, or with replicas each replica's (a tuple)
        self.seed: int | tuple[int, ...] = seeds if replicas is not None else seeds[0]
        self._seeds = seeds
        self._mask_all = params is None
        self._scores: dict[Tensor, Tensor] = {}
        self._own_moments: dict[Tensor, Tensor] = {}
        # one generator per replica (one without replicas), seeded as a single optimizer
        # with that replica's seed seeds its own, so replica r draws its masks
        self._cpu_generators = [torch.Generator().manual_seed(s) for s in seeds]
        self._device_generators: dict[str, list[torch.Generator]] = {}
        self._survival: dict[str, list[Any]] = {}
        self._no_scores: dict[str, Tensor] = {}
        #: per component, [eager fallbacks, fused calls] since the last telemetry read
        self._fallbacks: dict[str, list[int]] = {}
        self._fallback_reasons: list[str] = []
        self.fused = fused
        for group in optimizer.param_groups:
            self._check_group(group)
        self._install_optimizer_hooks()

    # --- torch.optim.Optimizer plumbing: everything lives in the base -------------

    def _install_optimizer_hooks(self) -> None:
        for name in (
            "_optimizer_step_pre_hooks",
            "_optimizer_step_post_hooks",
            "_optimizer_state_dict_pre_hooks",
            "_optimizer_state_dict_post_hooks",
            "_optimizer_load_state_dict_pre_hooks",
            "_optimizer_load_state_dict_post_hooks",
        ):
            setattr(self, name, OrderedDict())
        self._patch_step_function()

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.optimizer.state

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self.optimizer.defaults

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._patch_step_function()

    def __repr__(self) -> str:
        replicas = "" if self.replicas is None else f"replicas={self.replicas}, "
        return (
            f"{type(self).__name__}(p={self.p}, {self._describe()}granularity="
            f"{self.granularity!r}, {replicas}seed={self.seed}, "
            f"masked={len(self._labels)} tensors,\n  base={self.optimizer!r})"
        )

    def _describe(self) -> str:
        return ""

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add to the base; the new tensors are masked only when ``params`` was None."""
        self.optimizer.add_param_group(param_group)
        if self._mask_all:
            for q in self.optimizer.param_groups[-1]["params"]:
                self._labels.setdefault(q, DEFAULT_LABEL)
        self._check_group(self.optimizer.param_groups[-1])

    @property
    def masked_params(self) -> dict[Tensor, str]:
        """The masked tensors and their component labels."""
        return dict(self._labels)

    # --- the fused kernel (magma.fused) ---------------------------------------------

    def _fused_obstacle(self, group: ParamGroup) -> str | None:
        """Why the fused kernel cannot step this group's masked blocks, or None."""
        if self.granularity != "block":
            return f"granularity is {self.granularity!r}; it needs 'block'"
        if self.sampling == "alignment":
            return "sampling is 'alignment'; it needs 'uniform' or 'none' (masks drawn on the host)"
        if not F.supports(self.optimizer, group):
            return (
                f"the base is {type(self.optimizer).__name__}; it needs one of "
                f"{', '.join(F.FUSED_BASES)} (exact types, Adam/AdamW without differentiable=True)"
            )
        return None

    def _check_group(self, group: ParamGroup) -> None:
        """ValueError where the group's masked tensors cannot take fused=True or the
        replicas (each must be stacked; a base that declares replicas must agree)."""
        masked = [q for q in group["params"] if q in self._labels]
        if not masked:
            return
        if self.fused:
            obstacle = self._fused_obstacle(group)
            if obstacle is not None:
                raise ValueError(f"fused=True is impossible: {obstacle} (or pass fused=None)")
        if self.decay_on_skip:
            self._skip_decay(group)  # raises where the base has no decoupled decay
        if "replicas" in group and group["replicas"] != self.replicas:
            raise ValueError(
                f"replicas={self.replicas}, but the base {type(self.optimizer).__name__} "
                f"was built with replicas={group['replicas']}: build it with the same"
            )
        if self.replicas is None:
            return
        check_stacked(masked, self.replicas, "masked tensor")
        rule = rule_for(self.optimizer, group)
        obstacle = rule.replicas_obstacle(masked) if rule is not None else None
        if obstacle is not None:
            raise ValueError(f"replicas={self.replicas} is impossible: {obstacle}")

    def _skip_decay(self, group: ParamGroup) -> float | Tensor:
        """lr * wd, the decoupled decay a masked-out block takes (``decay_on_skip``); 0
        without it. ValueError where the base has no decoupled decay to apply."""
        if not self.decay_on_skip:
            return 0.0
        rule = rule_for(self.optimizer, group)
        decay = rule.decoupled_decay(group) if rule is not None else None
        if decay is None:
            why = (
                f"couples its weight_decay={group.get('weight_decay')} into the gradient"
                if rule is not None
                else "has no rule in magma.rules, so its weight decay is unknown"
            )
            raise ValueError(
                f"decay_on_skip=True applies the base's decoupled weight decay to masked-out "
                f"blocks, but {type(self.optimizer).__name__} {why}: use a base that decouples "
                f"it (AdamW, C-AdamW, LaProp, Muon), weight_decay=0, or decay_on_skip=False"
            )
        return decay

    def _uses_fused(self, group: ParamGroup, device: torch.device) -> bool:
        """True forces it (validated in __init__); None: on CUDA when it applies."""
        if self.fused is None:
            return device.type == "cuda" and self._fused_obstacle(group) is None
        return self.fused

    def _step_fused(
        self,
        group: ParamGroup,
        rule: UpdateRule,
        params: list[Tensor],
        states: list[dict[str, Tensor]],
        host_draws: dict[Tensor, Keep],
    ) -> None:
        keep = [host_draws.get(q, self._all_kept) for q in params]
        for q, kept in zip(params, keep, strict=True):
            self._count_survival(q, kept)
        previous = None
        own_moments: list[Tensor] = []
        if self._needs_scores:
            none_yet = self._no_score(params[0].device)
            previous = [self._scores.get(q, none_yet) for q in params]
            if rule.first_moment_key is None:
                own_moments = [self._own_moment(q) for q in params]
        scale = None if self.damping else self._undamped_scale
        scores, fallbacks = F.masked_step(
            rule,
            group,
            params,
            states,
            keep,
            previous,
            own_moments,
            OWN_MOMENT_BETA,
            scale,
            self.tau,
            self.ema,
            replicated=self.replicas is not None,
            previous_momentum=self.momentum == "previous",
            decay_on_skip=self.decay_on_skip,
        )
        if scores is not None:
            self._scores.update(zip(params, scores, strict=True))
        for q, fallback in zip(params, fallbacks, strict=True):
            self._count_fallback(q, fallback)

    def _no_score(self, device: torch.device) -> Tensor:
        """s_{t-1} for the compiled step of a block that has none yet, one per device,
        reused: NaN (the kernel then starts s_1 = s~_1) or ``score_init``'s number."""
        key = str(device)
        if key not in self._no_scores:
            shape = () if self.replicas is None else (self.replicas,)
            first = float("nan") if self.score_init == SCORE_INIT_FIRST else self.score_init
            self._no_scores[key] = torch.full(shape, first, device=device)
        return self._no_scores[key]

    def _count_fallback(self, param: Tensor, reason: str | None) -> None:
        """Tally a fused call per component, and warn once per reason when it ran eagerly."""
        tally = self._fallbacks.setdefault(self._labels[param], [0, 0])
        tally[1] += 1
        if reason is None:
            return
        tally[0] += 1
        if reason not in self._fallback_reasons:
            self._fallback_reasons.append(reason)
            warnings.warn(
                f"{type(self).__name__}(fused=...): the compiled masked step ran eagerly "
                f"(the same math, slower) because {reason}",
                F.FusedFallbackWarning,
                stacklevel=4,
            )

    @property
    def fused_fallbacks(self) -> list[str]:
        """Why compiled masked steps ran eagerly so far (each reason once); empty when
        every one ran compiled."""
        return list(self._fallback_reasons)

    # --- the step -----------------------------------------------------------------

    @property
    def _undamped_scale(self) -> float:
        """1/p keeps uniformly sampled updates unbiased; unsampled ones are the base's."""
        return 1.0 / self.p if self.sampling == "uniform" else 1.0

    @property
    def _all_kept(self) -> Keep:
        return True if self.replicas is None else (True,) * self.replicas

    @property
    def _needs_scores(self) -> bool:
        return self.damping or self.sampling == "alignment"

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        host_draws = self._draw_host_masks()
        fast: list[tuple[ParamGroup, UpdateRule, list[Tensor]]] = []
        generic: list[tuple[ParamGroup, list[Tensor]]] = []
        for group in self.param_groups:
            masked = [q for q in group["params"] if q.grad is not None and q in self._labels]
            if not masked:
                continue
            rule = rule_for(self.optimizer, group)
            if rule is None or any(q.grad.is_sparse or q.is_complex() for q in masked):
                generic.append((group, masked))
            else:
                fast.append((group, rule, masked))

        for group, rule, masked in fast:
            for index in buckets(masked):
                self._step_bucket(group, rule, [masked[i] for i in index], host_draws)

        snapshots = [self._prepare_generic(group, masked, host_draws) for group, masked in generic]
        hidden = [q for _, _, masked in fast for q in masked]
        grads = [q.grad for q in hidden]
        for q in hidden:
            q.grad = None
        try:
            self.optimizer.step()
        finally:
            for q, g in zip(hidden, grads, strict=True):
                q.grad = g
        for snapshot in snapshots:
            self._finish_generic(*snapshot)
        return loss

    def _draw_host_masks(self) -> dict[Tensor, Keep]:
        """Block masks for uniform sampling, drawn on the host: no sync, and masked
        blocks can be skipped outright. One draw per masked tensor, in param order,
        so a block's mask never depends on which other blocks had gradients; with
        replicas, each replica's generator draws its own row."""
        if self.granularity != "block" or self.sampling != "uniform":
            return {}
        ordered = [q for group in self.param_groups for q in group["params"] if q in self._labels]
        draws = [
            (torch.rand(len(ordered), generator=g, device="cpu") < self.p).tolist()
            for g in self._cpu_generators
        ]
        if self.replicas is None:
            return dict(zip(ordered, draws[0], strict=True))
        return dict(zip(ordered, zip(*draws, strict=True), strict=True))

    def _device_generators_on(self, device: torch.device) -> list[torch.Generator]:
        """One generator per replica (one without replicas) on ``device``."""
        key = str(device)
        if key not in self._device_generators:
            offset = sum(1 for k in self._device_generators) + 1
            self._device_generators[key] = [
                torch.Generator(device=device).manual_seed(s + offset) for s in self._seeds
            ]
        return self._device_generators[key]

    def _advance_and_score(
        self,
        group: ParamGroup,
        rule: UpdateRule | None,
        params: list[Tensor],
        grads: list[Tensor],
        states: list,
    ) -> list[Tensor]:
        """Advance the moments (the base's through ``rule``, the wrapper's own) and, where
        scores are needed, score each tensor against mu_{t-1} before the update (momentum
        "previous") or mu_t after it. Returns the gradients as the moments saw them."""
        score_before = self._needs_scores and self.momentum == "previous"
        if score_before:
            seen = rule.seen_gradients(group, params, grads) if rule is not None else grads
            self._update_scores(params, self._current_moments(rule, params, states), seen)
        if rule is not None:
            grads = rule.update_moments(group, params, grads, states)
        if self._needs_scores:
            self._advance_own_moments(rule, params, grads)
            if not score_before:
                self._update_scores(params, self._current_moments(rule, params, states), grads)
        return grads

    def _current_moments(
        self, rule: UpdateRule | None, params: list[Tensor], states: list
    ) -> list[Tensor]:
        """The first moments the cosine reads, as they are now: the base's (zeros where it
        has none yet, as SGD's first step) or the wrapper's own."""
        if rule is not None and rule.first_moment_key is not None:
            key = rule.first_moment_key
            return [
                s[key] if s.get(key) is not None else torch.zeros_like(q)
                for q, s in zip(params, states, strict=True)
            ]
        return [self._own_moment(q) for q in params]

    def _advance_own_moments(
        self, rule: UpdateRule | None, params: list[Tensor], grads: list[Tensor]
    ) -> None:
        """mu <- EMA with g of the wrapper's own moments, for a base that keeps none."""
        if rule is None or rule.first_moment_key is None:
            mus = [self._own_moment(q) for q in params]
            torch._foreach_lerp_(mus, grads, 1 - OWN_MOMENT_BETA)

    def _own_moment(self, param: Tensor) -> Tensor:
        """The wrapper's own first moment of ``param`` (EMA of g), created at zero."""
        if param not in self._own_moments:
            self._own_moments[param] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return self._own_moments[param]

    def _previous_score(self, param: Tensor, fresh: Tensor) -> Tensor | None:
        """s_{t-1} of ``param``; at its first step, per ``score_init``: None (s_1 = s~_1)
        or the number, shaped as ``fresh``."""
        if param in self._scores:
            return self._scores[param]
        if self.score_init == SCORE_INIT_FIRST:
            return None
        return torch.full_like(fresh, self.score_init)

    def _update_scores(self, params: list[Tensor], mus: list[Tensor], grads: list[Tensor]) -> None:
        if self.replicas is not None:
            for q, mu, g in zip(params, mus, grads, strict=True):
                cosine = S.sliced_cosine(mu, g, self.granularity, replicated=True)
                fresh = S.alignment(cosine, self.tau)
                self._scores[q] = S.smoothed(self._previous_score(q, fresh), fresh, self.ema)
            return
        if self.granularity == "block":
            fresh = S.alignment(S.block_cosines(mus, grads), self.tau)
            if all(q in self._scores for q in params):
                previous: Tensor | None = torch.stack([self._scores[q] for q in params])
            elif any(q in self._scores for q in params) or self.score_init != SCORE_INIT_FIRST:
                previous = torch.stack(
                    [
                        fresh[i]
                        if (previous_i := self._previous_score(q, fresh[i])) is None
                        else previous_i
                        for i, q in enumerate(params)
                    ]
                )
            else:
                previous = None
            for q, s in zip(params, S.smoothed(previous, fresh, self.ema).unbind(0), strict=True):
                self._scores[q] = s
            return
        for q, mu, g in zip(params, mus, grads, strict=True):
            fresh = S.alignment(S.sliced_cosine(mu, g, self.granularity), self.tau)
            self._scores[q] = S.smoothed(self._previous_score(q, fresh), fresh, self.ema)

    def _multipliers(
        self, params: list[Tensor], host_draws: dict[Tensor, Keep]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """scale * m and m per tensor, shaped to broadcast (0-dim for blocks, (S, 1, ..., 1)
        for a block per replica), on device."""
        replicated = self.replicas is not None
        mults, keeps = [], []
        for q in params:
            score = self._scores.get(q)
            shape = S.score_shape(q, self.granularity, replicated)
            if self.sampling == "none":
                keep = torch.ones(shape, device=q.device)
            elif self.sampling == "uniform" and q in host_draws and replicated:
                keep = torch.tensor(host_draws[q], dtype=torch.float32).to(q.device)
            elif self.sampling == "uniform" and q in host_draws:
                keep = torch.full((), float(host_draws[q]), device=q.device)
            else:
                chance = self.p if self.sampling == "uniform" else score
                generators = self._device_generators_on(q.device)
                if replicated:  # replica r draws its slice's shape from its own generator
                    draw = torch.stack(
                        [torch.rand(shape[1:], generator=g, device=q.device) for g in generators]
                    )
                else:
                    draw = torch.rand(shape, generator=generators[0], device=q.device)
                keep = (draw < chance).float()
            if self.damping:
                scale = score
            elif self.sampling == "alignment":
                scale = 1.0 / score
            else:
                scale = self._undamped_scale
            mult = keep * scale
            self._count_survival(q, keep)
            mults.append(broadcastable(mult, q.dim()) if replicated else mult)
            keeps.append(broadcastable(keep, q.dim()) if replicated else keep)
        return mults, keeps

    def _count_survival(self, param: Tensor, keep: Tensor | Keep) -> None:
        tally = self._survival.setdefault(self._labels[param], [0.0, 0])
        if self.replicas is None:
            share = keep.float().mean() if isinstance(keep, Tensor) else float(keep)
            tally[0] = tally[0] + share
        else:
            kept = keep if isinstance(keep, Tensor) else torch.tensor(keep)
            share = kept.float().reshape(self.replicas, -1).mean(1)
            total = tally[0]
            # a label's tensors on several devices: one copy to the first one's (a sync)
            tally[0] = total + share.to(total.device) if isinstance(total, Tensor) else share
        tally[1] += 1

    def _step_bucket(
        self, group: ParamGroup, rule: UpdateRule, params: list[Tensor], host_draws: dict
    ) -> None:
        states = []
        for q in params:
            if not self.state[q]:
                self.state[q].update(rule.init_state(group, q))
            states.append(self.state[q])
        if self._uses_fused(group, params[0].device):
            failure = F.backend_failure()
            if failure is None:
                self._step_fused(group, rule, params, states, host_draws)
                return
            for q in params:  # the compiler is gone for this process: the foreach path
                self._count_fallback(q, failure)
        grads = self._advance_and_score(group, rule, params, [q.grad for q in params], states)
        skip_decay = self._skip_decay(group)

        if self.replicas is None and self.granularity == "block" and self.sampling != "alignment":
            # Survivors are known on the host: only they do parameter work. (With
            # replicas a survivor is a slice: the multipliers below mask the others.)
            keep = [i for i, q in enumerate(params) if host_draws.get(q, True)]
            for q in params:
                self._count_survival(q, host_draws.get(q, True))
            decay_skipped_([q for q in params if not host_draws.get(q, True)], skip_decay)
            if not keep:
                return
            if self.damping:
                scales: list[float] | Tensor = torch.stack([self._scores[params[i]] for i in keep])
            else:
                scales = [self._undamped_scale] * len(keep)
            rule.apply(
                group,
                [params[i] for i in keep],
                [grads[i] for i in keep],
                [states[i] for i in keep],
                scales,
            )
            return
        deltas = rule.direction(group, params, grads, states)
        mults, keeps = self._multipliers(params, host_draws)
        torch._foreach_mul_(deltas, mults)
        _decay_dropped(params, keeps, skip_decay)
        torch._foreach_sub_(params, deltas)

    def _prepare_generic(
        self, group: ParamGroup, params: list[Tensor], host_draws: dict[Tensor, Keep]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor], float | Tensor]:
        grads = [q.grad.to_dense() if q.grad.is_sparse else q.grad for q in params]
        if self._needs_scores:
            for index in buckets(params):
                ps, gs = [params[i] for i in index], [grads[i] for i in index]
                self._advance_and_score(group, None, ps, gs, [])
        mults, keeps = self._multipliers(params, host_draws)
        before = [q.detach().clone() for q in params]
        return params, before, mults, keeps, self._skip_decay(group)

    @staticmethod
    def _finish_generic(
        params: list[Tensor],
        before: list[Tensor],
        mults: list[Tensor],
        keeps: list[Tensor],
        skip_decay: float | Tensor,
    ) -> None:
        # theta <- theta_before + mult * (theta_after - theta_before); exact at mult 0 and 1.
        for q, old, mult in zip(params, before, mults, strict=True):
            q.copy_(old.lerp_(q, mult.to(q.dtype)))
        _decay_dropped(params, keeps, skip_decay)

    # --- telemetry ------------------------------------------------------------------

    def telemetry(self, reset: bool = True) -> dict[str, dict[str, float | None]]:
        """Per component: mean alignment score s_t over its blocks, the fraction of
        blocks (or rows, columns, elements) that survived since the last read, and the
        share of its compiled (``fused``) steps that ran eagerly (None when not fused).

        Reading syncs with the device; ``step()`` never does. With replicas, the mean
        over replicas of ``replica_telemetry()``.
        """
        if self.replicas is not None:
            reports = self.replica_telemetry(reset)

            def mean(label: str, key: str) -> float | None:
                values = [r[label][key] for r in reports]
                return None if values[0] is None else sum(values) / len(values)

            return {
                label: {key: mean(label, key) for key in entry}
                for label, entry in reports[0].items()
            }
        report: dict[str, dict[str, float | None]] = {}
        for label in dict.fromkeys(self._labels.values()):
            blocks = [
                s
                for q, lab in self._labels.items()
                if lab == label and (s := self._scores.get(q)) is not None
            ]
            alignment = (
                float(torch.stack([s.float().mean() for s in blocks]).mean()) if blocks else None
            )
            total, count = self._survival.get(label, (0.0, 0))
            survival = float(total) / count if count else None
            report[label] = {
                "alignment": alignment,
                "survival": survival,
                "eager_fallback": self._fallback_share(label),
            }
        if reset:
            self._survival.clear()
            self._fallbacks.clear()
        return report

    def _fallback_share(self, label: str) -> float | None:
        """The share of the component's compiled-step calls since the last read that ran
        eagerly (``fused_fallbacks`` says why); None where none was made."""
        eager, calls = self._fallbacks.get(label, (0, 0))
        return eager / calls if calls else None

    def replica_telemetry(self, reset: bool = True) -> list[dict[str, dict[str, float | None]]]:
        """``telemetry()`` per replica: replica r's report is what a separate optimizer
        with replica r's seed would report. Without replicas, ``[telemetry()]``. One
        call resets the survival counts of every replica."""
        if self.replicas is None:
            return [self.telemetry(reset)]
        n = self.replicas
        reports: list[dict[str, dict[str, float | None]]] = [{} for _ in range(n)]
        for label in dict.fromkeys(self._labels.values()):
            blocks = [
                s.float().reshape(n, -1).mean(1)
                for q, lab in self._labels.items()
                if lab == label and (s := self._scores.get(q)) is not None
            ]
            alignments = torch.stack(blocks).mean(0).tolist() if blocks else [None] * n
            total, count = self._survival.get(label, (0.0, 0))
            survivals = (total.double() / count).tolist() if count else [None] * n
            fallback = self._fallback_share(label)
            for report, alignment, survival in zip(reports, alignments, survivals, strict=True):
                report[label] = {
                    "alignment": alignment,
                    "survival": survival,
                    "eager_fallback": fallback,
                }
        if reset:
            self._survival.clear()
            self._fallbacks.clear()
        return reports

    # --- checkpointing ----------------------------------------------------------------

    def _ordered_params(self) -> list[Tensor]:
        return list(chain.from_iterable(g["params"] for g in self.param_groups))

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        index = {q: i for i, q in enumerate(self._ordered_params())}

        def rng(generators: list[torch.Generator]) -> Tensor | list[Tensor]:
            states = [g.get_state() for g in generators]
            return states[0] if self.replicas is None else states

        masking: dict[str, Any] = {
            "scores": {index[q]: s.clone() for q, s in self._scores.items()},
            "first_moments": {index[q]: m.clone() for q, m in self._own_moments.items()},
            "rng": {
                "cpu": rng(self._cpu_generators),
                "devices": {d: rng(g) for d, g in self._device_generators.items()},
            },
        }
        masking.update({name: getattr(self, name) for name in DEFAULTS})
        if self.replicas is not None:  # per-replica generators: a list of states each
            masking["replicas"] = self.replicas
        state_dict = {"base": self.optimizer.state_dict(), "masking": masking}
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            state_dict = post_hook(self, state_dict) or state_dict
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        """Restore base state, scores and mask RNG; tensors follow each parameter's
        device (scores stay float32, first moments take the parameter's dtype)."""
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            state_dict = pre_hook(self, state_dict) or state_dict
        if not isinstance(state_dict, Mapping) or not {"base", "masking"} <= state_dict.keys():
            raise ValueError(
                "state_dict must come from a Magma/SkipUpdate state_dict() "
                "(keys 'base' and 'masking')"
            )
        masking = state_dict["masking"]
        if masking.get("replicas") != self.replicas:
            raise ValueError(
                f"state_dict is of an optimizer with replicas={masking.get('replicas')}, "
                f"this one has replicas={self.replicas}"
            )
        for name, default in DEFAULTS.items():
            recorded = masking.get(name, default)  # older state dicts: the default
            if recorded != getattr(self, name):
                raise ValueError(
                    f"state_dict is of an optimizer with {name}={recorded!r}, "
                    f"this one has {name}={getattr(self, name)!r}"
                )
        self.optimizer.load_state_dict(state_dict["base"])
        params = self._ordered_params()
        self._scores = {
            params[int(i)]: s.to(device=params[int(i)].device, dtype=torch.float32)
            for i, s in masking["scores"].items()
        }
        self._own_moments = {
            params[int(i)]: m.to(device=params[int(i)].device, dtype=params[int(i)].dtype)
            for i, m in masking["first_moments"].items()
        }

        def listed(states: Tensor | list[Tensor]) -> list[Tensor]:
            return [states] if self.replicas is None else list(states)

        for generator, rng_state in zip(
            self._cpu_generators, listed(masking["rng"]["cpu"]), strict=True
        ):
            generator.set_state(rng_state)
        self._device_generators = {}
        for device, rng_states in masking["rng"]["devices"].items():
            generators = [torch.Generator(device=device) for _ in self._seeds]
            for generator, rng_state in zip(generators, listed(rng_states), strict=True):
                generator.set_state(rng_state)
            self._device_generators[device] = generators
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)
