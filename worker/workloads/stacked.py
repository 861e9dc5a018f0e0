"""S workloads of one configuration trained as one batched model (``worker.seed_batch``).

Each seed's workload is built as for a single trial, so its initialisation, data and
evaluation are exactly the single run's. Their models' parameters and buffers are
stacked along a new leading dim (``torch.func.stack_module_state``), and every seed's
loss comes from one ``torch.func.vmap`` over ``functional_call`` of the first
workload's own ``loss`` method: ``functional_call`` swaps a module's tensors in place,
so ``loss`` runs unchanged on each seed's slice. A workload's loss must therefore
depend on its seed only through its model's parameters and buffers and the batch
(true of every workload here: the quadratic's per-seed H is a buffer).

The quadratic has no natively batched twin: at S=1024 one einsum would save ~0.2 ms of the
0.5 ms vmapped loss and backward, against ~6 ms a step of drawing the seeds' own batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from worker.workloads.base import Workload

#: where ``_Call`` holds the workload's model, so parameter names gain this prefix
_PREFIX = "model."


class _Call(nn.Module):
    """A module whose forward calls any function: ``functional_call`` on it swaps the
    workload's model tensors for the duration of a workload method."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)


def stack_batches(batches: Sequence[Any]) -> Any:
    """The seeds' batches as one: tensors stacked along a new dim 0, tuples, lists and
    dicts stacked leaf by leaf; any other leaf (a host-side count) is the first seed's."""
    first = batches[0]
    if isinstance(first, Tensor):
        return torch.stack(list(batches))
    if isinstance(first, (tuple, list)):
        return type(first)(stack_batches(parts) for parts in zip(*batches, strict=True))
    if isinstance(first, dict):
        return {key: stack_batches([b[key] for b in batches]) for key in first}
    return first


def batch_dims(batch: Any) -> Any:
    """vmap's ``in_dims`` for a stacked batch: 0 for tensors, None for other leaves."""
    if isinstance(batch, Tensor):
        return 0
    if isinstance(batch, (tuple, list)):
        return type(batch)(batch_dims(part) for part in batch)
    if isinstance(batch, dict):
        return {key: batch_dims(value) for key, value in batch.items()}
    return None


class StackedWorkloads:
    """The workloads' trainable tensors, stacked: ``params[name][r]`` is seed r's."""

    def __init__(self, workloads: Sequence[Workload]) -> None:
        if not workloads:
            raise ValueError("workloads is empty: stack at least one")
        self.workloads = list(workloads)
        self.calls = [_Call(w.model) for w in self.workloads]
        params, buffers = stack_module_state([w.model for w in self.workloads])
        self.params: dict[str, Tensor] = params
        self.buffers: dict[str, Tensor] = buffers
        self._batched: Callable[..., Tensor] | None = None  # built for the first batch
        self._compile = False

    def trainable(self) -> list[Tensor]:
        """The stacked tensors an optimizer steps, in the model's parameter order."""
        return list(self.params.values())

    def masked_params(self) -> dict[str, list[Tensor]]:
        """The first workload's ``masked_params``, each tensor replaced by its stack."""
        names = {p: name for name, p in self.workloads[0].model.named_parameters()}
        return {
            label: [self.params[names[p]] for p in ps]
            for label, ps in self.workloads[0].masked_params().items()
        }

    def batch(self, step: int, micro_step: int) -> tuple[Any, list[Any]]:
        """(the stacked batch, each seed's own batch) for one micro-step."""
        own = [w.batch(step, micro_step) for w in self.workloads]
        return stack_batches(own), own

    def _vmapped_loss(self, dims: Any) -> Callable[..., Tensor]:
        call, loss = self.calls[0], self.workloads[0].loss

        def one(params: dict[str, Tensor], buffers: dict[str, Tensor], batch: Any) -> Tensor:
            tensors = {_PREFIX + k: v for k, v in (params | buffers).items()}
            return functional_call(call, tensors, (loss, batch))

        batched = vmap(one, in_dims=(0, 0, dims))
        return torch.compile(batched) if self._compile else batched

    def loss(self, batch: Any) -> Tensor:
        """Every seed's loss on its slice of ``batch`` (a ``stack_batches`` result): (S,)."""
        if self._batched is None:  # a workload's batches all have one structure
            self._batched = self._vmapped_loss(batch_dims(batch))
        return self._batched(self.params, self.buffers, batch)

    def evaluate(self, replica: int) -> dict[str, float]:
        """Seed ``replica``'s held-out metrics: its own workload's ``evaluate`` on its slice."""
        workload = self.workloads[replica]
        tensors = {_PREFIX + k: v[replica].detach() for k, v in self.params.items()}
        return functional_call(self.calls[replica], tensors, (workload.evaluate,))

    def state_dict(self) -> dict[str, dict[str, Tensor]]:
        return {"params": self.params, "buffers": self.buffers}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, dict[str, Tensor]]) -> None:
        for kind, tensors in (("params", self.params), ("buffers", self.buffers)):
            if state[kind].keys() != tensors.keys():
                raise ValueError(f"checkpoint {kind} {sorted(state[kind])} != {sorted(tensors)}")
            for name, value in state[kind].items():
                tensors[name].copy_(value)

    def compile(self) -> None:
        """``torch.compile`` the batched loss (``config.compile``)."""
        self._compile = True
        self._batched = None
