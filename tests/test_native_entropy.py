"""The fused Gaussian-Sparsemax entropy kernel (mixedarray._native.cuda_entropy).

1. Simulator (always runs, CI included; each check in a fresh interpreter with
   ``NUMBA_ENABLE_CUDASIM=1``, as tests/test_native_cuda.py):

   * per draw: the kernel's point ``y = sparsemax(z)`` and ``log p(y)`` on given scores
     (``launch_points``: the entropy kernel's device functions minus the random numbers) against
     the reference — the same support, ``y`` within 1e-12 (float64) / 1e-6 (float32), and
     ``log p`` within 1e-10 relative of the float64 reference ``GaussianSparsemax.log_prob`` at
     the same point (float32 parameters too: the kernel scores the float32 point in float64),
     and within 1e-5 relative of the float32 reference but at scales of 1e-3 (where that
     reference's float32 ``a = μ − y`` loses digits); K = 1, 2, 3, 10, 40, faces of every size,
     ties with the threshold, scales from 1e-3 to 30, far tails (log p down to −5e5), 2 to 64
     Gauss–Hermite nodes;
   * the whole estimate (``entropy_estimate`` on NumPy parameters, which the simulator runs) —
     two batch members, several launches — against the reference ``ma.entropy(method="mc")``
     within 4.5 combined standard errors, K = 2 against the closed form, and a planted wrong
     law (scales × 1.5) that must fail the same check;
   * the launch compiles for a real GPU (sm_90 PTX) when libNVVM is installed.
2. In process, no GPU: the dispatch rule of ``ma.entropy`` and ``reference_only``.
3. Real GPU (skipped with the reason without one): ``ma.entropy`` on torch CUDA tensors and
   CuPy arrays takes the kernel, keeps its results on the device without reading anything
   back, and agrees with the reference path within 4 combined standard errors.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from helpers import from_numpy, to_numpy
from test_native_cuda import (  # noqa: F401  (gpu_library: a fixture)
    ROOT,
    gpu_library,
    needs_cudasim,
    nvvm_missing,
    simulate,
)

import mixedarray as ma
from mixedarray import information
from mixedarray._native import cuda_entropy, cuda_interop, fast_paths_enabled, reference_only

try:  # host reads raise inside (where the test helpers have device guards)
    from helpers import device_guards
except ImportError:  # pragma: no cover - helpers without guards

    def device_guards(library: str) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# 1. Numba's CUDA simulator

POINTS_CHECK = """
import array_api_compat.numpy as anp
import mixedarray as ma
from mixedarray import projections as P
from mixedarray._native.cuda_entropy import launch_points

def kernel_points(loc, scale, z, dtype, num_nodes):
    loc, scale = (np.ascontiguousarray(np.asarray(a, dtype=dtype)) for a in (loc, scale))
    z = np.ascontiguousarray(np.asarray(z, dtype=dtype))
    y = np.full_like(z, np.nan)
    log_p = np.full(z.shape[0], np.nan)
    launch_points(loc, scale, z, y, log_p, num_nodes=num_nodes)
    return z, y, log_p

def every_face_size(rng, k, sizes):
    # Row s: a face of exactly s vertices (scores in [0, 0.5/s] on it, below −1/s off it),
    # columns shuffled.
    rows = []
    for s in sizes:
        z = np.concatenate([rng.uniform(0, 0.5 / s, s), -1.0 / s - rng.uniform(0.01, 2, k - s)])
        rows.append(rng.permutation(z))
    return np.array(rows)

def check(label, loc, scale, z, dtype, moderate, num_nodes=32):
    loc, scale = np.asarray(loc, float), np.asarray(scale, float)
    z, y, log_p = kernel_points(loc, scale, z, dtype, num_nodes)
    where = f"{label} {dtype} K={loc.size}"
    exact_y = P.reference("sparsemax", anp, z.astype(np.float64))
    same_dtype_y = P.reference("sparsemax", anp, z)
    assert np.array_equal(y > 0, same_dtype_y > 0), f"{where}: support differs"
    assert np.max(np.abs(y - exact_y)) <= (1e-6 if dtype == "float32" else 1e-12), where
    # the reference density at the kernel's point: float64 (parameters as the kernel saw them)
    point = y.astype(np.float64)
    loc_d, scale_d = loc.astype(dtype).astype(float), scale.astype(dtype).astype(float)
    ref = ma.GaussianSparsemax(
        loc_d, scale_d, num_nodes=num_nodes, validate_args=False).log_prob(point)
    assert np.all(np.isfinite(ref)) and np.all(np.isfinite(log_p)), where
    err = np.abs(log_p - ref) / np.maximum(1.0, np.abs(ref))
    assert np.max(err) <= 1e-10, (where, np.max(err), log_p, ref)
    if dtype == "float32" and moderate:
        ref32 = ma.GaussianSparsemax(loc.astype(dtype), scale.astype(dtype),
                                     num_nodes=num_nodes, validate_args=False).log_prob(y)
        err32 = np.abs(log_p - ref32) / np.maximum(1.0, np.abs(ref))
        assert np.max(err32) <= 1e-5, (where, "float32 reference", np.max(err32))
    return {int(s) for s in (y > 0).sum(-1)}, float(ref.min())
"""


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@needs_cudasim
def test_simulated_log_p_matches_reference_density(dtype):
    simulate(
        POINTS_CHECK
        + f"""
dtype = "{dtype}"
rng = np.random.default_rng(11)
lowest = 0.0
for k, sizes, draws in ((1, [1], 4), (2, [1, 2], 12), (3, [1, 2, 3], 12),
                        (10, range(1, 11), 10), (40, [1, 2, 3, 5, 10, 20, 39, 40], 4)):
    cases = {{
        "unit": (rng.normal(size=k), np.exp(0.5 * rng.normal(size=k)), True),
        "tiny scale": (rng.normal(size=k) * 1e-3, np.full(k, 1e-3), False),
        "huge scale": (rng.normal(size=k) * 10, np.full(k, 30.0), True),
        "mixed scales": (rng.normal(size=k), 10 ** rng.uniform(-2, 1.5, size=k), True),
        "far tails": (rng.normal(size=k) * 8, np.full(k, 0.3), True),
    }}
    seen = set()
    for label, (loc, scale, moderate) in cases.items():
        z = np.concatenate([loc + scale * rng.normal(size=(draws, k)),
                            every_face_size(rng, k, sizes)])
        sizes_seen, low = check(label, loc, scale, z, dtype, moderate)
        seen |= sizes_seen
        lowest = min(lowest, low)
    assert seen >= set(sizes), (k, seen)
# a far-tail vertex (P(Y = e_1) ≈ e^-1000) and edge, K = 3 and 4
for loc, scale, z in (([-10.0, 5.0, 5.0], [0.3, 0.3, 0.3], [[3.0, 0, 0], [1.0, 0.9, -2]]),
                      ([2.0, -3.0, 0.5, 0.0], [0.05, 1.0, 2.0, 0.5],
                       [[0, 3.0, 0, 0], [0, 1.0, 1.0, -2], [0.1, 0.2, 0.3, 0.4]])):
    _, low = check("far vertex", loc, scale, z, dtype, True)
    lowest = min(lowest, low)
assert lowest < -500, lowest
# ties with the threshold land on the boundary of the face (exact zeros), as the reference's
for z in ([[1.0, 0, 0], [2.0, 1, 1], [1, 1, 0]], [[1.0] + [0.0] * 9, [0.5] * 2 + [-0.5] * 8]):
    k = len(z[0])
    sizes, _ = check("ties", np.linspace(-1, 1, k), np.full(k, 0.7), z, dtype, True)
    assert 1 in sizes, sizes
# the distribution's number of Gauss–Hermite nodes is the kernel's
loc, scale = rng.normal(size=10), np.exp(0.5 * rng.normal(size=10))
z = np.concatenate([loc + scale * rng.normal(size=(6, 10)), every_face_size(rng, 10, [1, 4])])
for num_nodes in (2, 8, 64):
    check(f"{{num_nodes}} nodes", loc, scale, z, dtype, True, num_nodes)
print("ok")
"""
    )


ESTIMATE_CHECK = """
import mixedarray as ma
from mixedarray._native.cuda_entropy import entropy_estimate

def gap(estimate, reference):
    value, stderr = np.asarray(estimate.value, float), np.asarray(estimate.stderr, float)
    assert np.all(stderr > 0) and np.all(stderr < 0.1 * np.abs(value)), (value, stderr)
    return np.abs(value - reference.value) / np.hypot(stderr, reference.stderr)
"""


@needs_cudasim
def test_simulated_estimate_matches_reference_entropy():
    """Two batch members (K = 3), 2000 draws in three launches, float64 and float32, against
    the reference estimate at 50k draws; the same members with scales × 1.5 fail; K = 2
    against the closed form (the one-bit density)."""
    simulate(
        ESTIMATE_CHECK
        + """
loc = np.array([[0.4, 0.1, -0.3], [1.0, -0.2, 0.3]])
scale = np.array([[0.5, 0.8, 0.3], [0.3, 1.0, 0.7]])
reference = ma.entropy(ma.GaussianSparsemax(loc, scale), method="mc", rng=1,
                       num_samples=50_000, return_stderr=True)
wrong = ma.entropy(ma.GaussianSparsemax(loc, 1.5 * scale), method="mc", rng=2,
                   num_samples=50_000, return_stderr=True)
for dtype in ("float64", "float32"):
    d = ma.GaussianSparsemax(loc.astype(dtype), scale.astype(dtype))
    estimate = entropy_estimate(d, 17, 2000, 700, threads=32, blocks=2)
    assert estimate.value.shape == (2,) and estimate.value.dtype == np.dtype(dtype)
    assert estimate.stderr.dtype == np.dtype(dtype)
    assert np.max(gap(estimate, reference)) < 4.5, (dtype, estimate, reference)
    assert np.min(gap(estimate, wrong)) > 4.5, (dtype, "control passed", estimate, wrong)
bit = ma.GaussianSparsemax(np.array([-0.4, 0.0]), np.full(2, 0.7 * np.sqrt(2)))
estimate = entropy_estimate(bit, 3, 2000, 1000, threads=32, blocks=2)
exact = ma.Estimate(bit.entropy_exact(), 0.0)
assert estimate.value.shape == ()
assert gap(estimate, exact) < 4.5, (estimate, exact)
assert gap(estimate, ma.Estimate(exact.value + 10 * estimate.stderr, 0.0)) > 4.5
print("ok")
"""
    )


@needs_cudasim
def test_simulated_estimate_seeding_and_wide_events():
    """The same seed gives the same sums (to float64 summation order), another seed others;
    K = 1 has log p = 0 for every draw; K = 20 runs with 32-entry local arrays."""
    simulate(
        ESTIMATE_CHECK
        + """
from mixedarray import random
from mixedarray._native.cuda_entropy import launch_sums

rng = np.random.default_rng(2)
loc, scale = rng.normal(size=(1, 20)), np.exp(0.3 * rng.normal(size=(1, 20)))

def sums(seed, blocks=2, sizes=(40,)):
    out = np.zeros((1, 2))
    launch_sums(loc, scale, random.seeds(seed, len(sizes), like=loc), list(sizes), out,
                threads=32, blocks=blocks)
    return out

a, b, c = sums(5), sums(5), sums(6)
np.testing.assert_allclose(a, b, rtol=1e-12)
assert not np.allclose(a, c)
assert np.all(np.isfinite(a)) and a[0, 1] > 0
one = entropy_estimate(ma.GaussianSparsemax(np.array([0.3]), np.array([2.0])), 1, 100, 64,
                       threads=32, blocks=1)
assert abs(float(one.value)) < 1e-12 and abs(float(one.stderr)) < 1e-12, one
print("ok")
"""
    )


@needs_cudasim
def test_entropy_kernel_compiles_for_a_gpu():
    """The simulator runs Python; this compiles the kernels with NVVM to sm_90 PTX (typing and
    lowering as on a real GPU), where libNVVM is installed; no GPU is needed."""
    reason = nvvm_missing()
    if reason:
        pytest.skip(reason)
    body = textwrap.dedent(
        """
        import types
        from numba import cuda, float32, float64, int32
        import numba.cuda.dispatcher as dispatcher
        # Device functions ask the current device for its compute capability: there is none.
        dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
        from mixedarray._native import cuda_density_kernels as K
        kernel = K.entropy_kernel("float32", 16, 32, 128)
        sig = (float32[:, ::1], float32[:, ::1], int32[:, ::1], int32, int32, float64,
               float64[:, ::1])
        ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
        assert ".entry" in ptx and "atom.global.add.f64" in ptx
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", body], env=env, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0 and "get_current_device" in result.stderr:
        pytest.skip("this Numba compiles device functions differently")  # pragma: no cover
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# 2. In process, no GPU needed


def _gaussian_sparsemax(k: int, lib: str = "torch", **kwargs):
    torch = pytest.importorskip(lib)
    rng = np.random.default_rng(k)
    loc = torch.tensor(rng.normal(size=k), **kwargs)
    return ma.GaussianSparsemax(loc, torch.ones(k, dtype=loc.dtype))


@pytest.fixture
def pretend_gpu(monkeypatch):
    """torch CPU tensors pass ``applicable``'s device checks (the dispatch logic alone)."""
    monkeypatch.setattr(cuda_interop, "torch_tensor_ok", lambda t: True)
    monkeypatch.setattr(cuda_interop, "available", lambda: True)
    calls = []

    def fake(d, rng, num_samples, chunk_size=None, progress=False):
        calls.append(num_samples)
        fake.options = (chunk_size, progress)
        zero = d._xp.zeros(d.batch_shape, dtype=d.dtype)
        return ma.Estimate(zero - 1.0, zero + 0.5)

    monkeypatch.setattr(cuda_entropy, "entropy_estimate", fake)
    return calls


def test_entropy_dispatch_rule(pretend_gpu):
    """mc → kernel; auto → kernel for K > 2 (no closed form), the exact value for K = 2."""
    d3 = _gaussian_sparsemax(3)
    value = ma.entropy(d3, method="mc", rng=0, num_samples=10, return_stderr=True)
    assert pretend_gpu == [10] and float(value.value) == -1.0 and float(value.stderr) == 0.5
    assert float(ma.entropy(d3, rng=0, num_samples=12)) == -1.0
    assert pretend_gpu == [10, 12]
    d2 = _gaussian_sparsemax(2)
    exact = ma.entropy(d2, rng=0, num_samples=12, return_stderr=True)
    assert pretend_gpu == [10, 12] and float(exact.stderr) == 0.0
    np.testing.assert_allclose(float(exact.value), float(d2.entropy_exact()))
    ma.entropy(d2, method="mc", rng=0, num_samples=14)
    assert pretend_gpu == [10, 12, 14]
    with pytest.raises(NotImplementedError):
        ma.entropy(d3, method="exact")
    # the Monte Carlo options reach the kernel's host code
    ma.entropy(d3, method="mc", rng=0, num_samples=16, chunk_size=4, progress=True)
    assert pretend_gpu[-1] == 16 and cuda_entropy.entropy_estimate.options == (4, True)


def test_entropy_dispatch_exclusions(pretend_gpu):
    """No kernel under ``reference_only``, for a graph to keep, for K > 128, or elsewhere."""
    torch = pytest.importorskip("torch")
    d3 = _gaussian_sparsemax(3)
    assert cuda_entropy.applicable(d3)
    with reference_only():
        assert not cuda_entropy.applicable(d3)
        assert not information._fused_entropy(d3)
        ma.entropy(d3, method="mc", rng=0, num_samples=10)
    assert pretend_gpu == []
    graph = _gaussian_sparsemax(3, requires_grad=True)
    assert not cuda_entropy.applicable(graph)
    with torch.no_grad():
        assert cuda_entropy.applicable(graph)
    assert not cuda_entropy.applicable(_gaussian_sparsemax(cuda_entropy.MAX_K + 1))
    assert cuda_entropy.applicable(_gaussian_sparsemax(cuda_entropy.MAX_K))
    assert not cuda_entropy.applicable(ma.NonEmptyBernoulli(torch.zeros(3)))

    class Other(ma.GaussianSparsemax):
        def _log_prob(self, y):
            return super()._log_prob(y)

    assert not cuda_entropy.applicable(Other(torch.zeros(3), 1.0))


def test_entropy_on_cpu_arrays_imports_no_kernel():
    """NumPy parameters decide without importing the kernel modules or numba.cuda."""
    body = textwrap.dedent(
        """
        import sys
        import numpy as np
        import mixedarray as ma
        d = ma.GaussianSparsemax(np.array([0.4, 0.1, -0.3]), np.array([0.5, 0.8, 0.3]))
        ma.entropy(d, method="mc", rng=0, num_samples=100)
        loaded = [m for m in ("numba.cuda", "mixedarray._native.cuda_entropy",
                              "mixedarray._native.cuda_density_kernels") if m in sys.modules]
        assert not loaded, loaded
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", body], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_reference_only_nests_and_is_per_thread():
    assert fast_paths_enabled()
    seen = []
    with reference_only():
        assert not fast_paths_enabled()
        with reference_only():
            assert not fast_paths_enabled()
        assert not fast_paths_enabled()
        other = threading.Thread(target=lambda: seen.append(fast_paths_enabled()))
        other.start()
        other.join()
    assert fast_paths_enabled()
    assert seen == [True]


def test_reference_only_switches_the_face_kernel_off(monkeypatch):
    from mixedarray import face_frequencies
    from mixedarray._native import cuda_faces

    torch = pytest.importorskip("torch")
    monkeypatch.setattr(cuda_faces, "applicable", lambda d, table: True)
    d = ma.GaussianSparsemax(torch.zeros(3), 1.0)
    assert face_frequencies._fused(d, False)
    with reference_only():
        assert not face_frequencies._fused(d, False)


# ---------------------------------------------------------------------------------------------
# 3. A real GPU


@pytest.fixture
def gpu_backend(gpu_library):  # noqa: F811  (the fixture imported above)
    """``((xp, device), library)`` for torch CUDA tensors and CuPy arrays on a real GPU."""
    xp, device, library = gpu_library
    return (xp, device), library


def _rng(library: str, seed: int):
    if library == "torch":
        import torch

        return torch.Generator(device="cuda").manual_seed(seed)
    import cupy

    return cupy.random.default_rng(seed)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpu_entropy_takes_the_fused_kernel(gpu_backend, dtype, monkeypatch):
    backend, library = gpu_backend
    rng = np.random.default_rng(5)
    loc = from_numpy(backend, rng.normal(size=(3, 10)), dtype)
    scale = from_numpy(backend, np.exp(0.4 * rng.normal(size=(3, 10))), dtype)
    d = ma.GaussianSparsemax(loc, scale)
    calls = []
    original = cuda_entropy.entropy_estimate
    monkeypatch.setattr(
        cuda_entropy, "entropy_estimate", lambda *a: calls.append(1) or original(*a)
    )
    n = 1_000_000
    first, second = _rng(library, 1), _rng(library, 2)
    with device_guards(library):
        fused = ma.entropy(d, method="mc", rng=first, num_samples=n, return_stderr=True)
        auto = ma.entropy(d, rng=second, num_samples=1000)
    assert calls == [1, 1]
    for out in (fused.value, fused.stderr, auto):
        assert type(out) is type(loc) and str(out.dtype) == dtype and out.device == loc.device
        assert tuple(out.shape) == (3,)
    with reference_only():
        reference = ma.entropy(
            d, method="mc", rng=_rng(library, 3), num_samples=200_000, return_stderr=True
        )
    assert calls == [1, 1]
    value, se = to_numpy(fused.value).astype(float), to_numpy(fused.stderr).astype(float)
    ref, ref_se = to_numpy(reference.value).astype(float), to_numpy(reference.stderr).astype(float)
    assert np.all(se > 0) and np.all(se < 0.1 * np.abs(value))
    combined = np.hypot(se, ref_se)
    assert np.max(np.abs(value - ref) / combined) < 4
    # Negative control: the members rotated are different laws and fail the same check.
    assert np.min(np.abs(value - np.roll(ref, 1)) / combined) > 4


def test_gpu_entropy_bit_exact_for_auto_and_kernel_for_mc(gpu_backend, monkeypatch):
    """K = 2: ``auto`` is the closed form; ``mc`` takes the kernel (its one-bit density)."""
    backend, library = gpu_backend
    loc = from_numpy(backend, np.array([-0.4, 0.0]), "float64")
    d = ma.GaussianSparsemax(loc, from_numpy(backend, np.full(2, 0.7 * np.sqrt(2)), "float64"))
    calls = []
    original = cuda_entropy.entropy_estimate
    monkeypatch.setattr(
        cuda_entropy, "entropy_estimate", lambda *a: calls.append(1) or original(*a)
    )
    exact = float(to_numpy(ma.entropy(d, rng=0, num_samples=10)))
    assert calls == []
    generator = _rng(library, 4)
    with device_guards(library):
        mc = ma.entropy(d, method="mc", rng=generator, num_samples=4_000_000, return_stderr=True)
    assert calls == [1]
    value, se = float(to_numpy(mc.value)), float(to_numpy(mc.stderr))
    assert 0 < se < 0.1 * abs(exact)
    assert abs(value - exact) < 4 * se
    assert abs(value - exact - 10 * se) > 4 * se
