"""Base optimizers the paper compares against that torch does not ship, and Muon for
stacked replicas."""

# magma.rules first: it imports these optimizers, and they import magma.rules.base (which
# runs magma.rules' own import first), so the rules package must be the one started first
import magma.rules  # noqa: F401
from magma.optim.batched_muon import BatchedMuon
from magma.optim.cautious_adamw import CAdamW
from magma.optim.laprop import LaProp

__all__ = ["BatchedMuon", "CAdamW", "LaProp"]
