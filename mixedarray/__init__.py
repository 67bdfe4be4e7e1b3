"""mixedarray: mixed random variables on the probability simplex, on every array library.

The mathematics is written once against the Python array API standard and runs unchanged on
NumPy, CuPy, PyTorch, JAX and array-api-strict arrays, returning the caller's kind of array on
the caller's device.  Importing ``mixedarray`` imports no array framework.
"""

from __future__ import annotations

from mixedarray import faces, random
from mixedarray.distributions import (
    Distribution,
    GaussianSparsemax,
    GumbelSoftmax,
    HardConcrete,
    KDHardConcrete,
    MaxEntMixed,
    MixedDirichlet,
    NonEmptyBernoulli,
)
from mixedarray.face_frequencies import FaceStatistics, face_statistics
from mixedarray.gradients import expectation_surrogate, score_function_surrogate
from mixedarray.information import code_length, cross_entropy, entropy, kl_divergence
from mixedarray.montecarlo import Estimate, expectation, sample
from mixedarray.projections import entmax, entmax15, softmax, sparsemax

__version__ = "0.1.0.dev0"

__all__ = [
    "Distribution",
    "Estimate",
    "FaceStatistics",
    "GaussianSparsemax",
    "GumbelSoftmax",
    "HardConcrete",
    "KDHardConcrete",
    "MaxEntMixed",
    "MixedDirichlet",
    "NonEmptyBernoulli",
    "__version__",
    "code_length",
    "cross_entropy",
    "entmax",
    "entmax15",
    "entropy",
    "expectation",
    "expectation_surrogate",
    "face_statistics",
    "faces",
    "kl_divergence",
    "random",
    "sample",
    "score_function_surrogate",
    "softmax",
    "sparsemax",
]
