"""Distributions on the probability simplex (one concept per module)."""

from mixedarray.distributions.base import Distribution
from mixedarray.distributions.gaussian_sparsemax import GaussianSparsemax
from mixedarray.distributions.hard_concrete import HardConcrete
from mixedarray.distributions.maxent import MaxEntMixed
from mixedarray.distributions.mixed_dirichlet import MixedDirichlet
from mixedarray.distributions.nonempty_bernoulli import NonEmptyBernoulli
from mixedarray.distributions.relaxed import GumbelSoftmax, KDHardConcrete

__all__ = [
    "Distribution",
    "GaussianSparsemax",
    "GumbelSoftmax",
    "HardConcrete",
    "KDHardConcrete",
    "MaxEntMixed",
    "MixedDirichlet",
    "NonEmptyBernoulli",
]
