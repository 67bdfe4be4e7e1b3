"""Eager JAX GPU arrays on the Numba CUDA fast paths, through DLPack and CuPy.

An eager (concrete) float32/float64 JAX array on one CUDA GPU takes the kernels of
``mixedarray._native`` (``cuda_interop.jax_array_ok`` decides, ``through_cupy`` converts with
DLPack both ways); anything traced keeps the standard-API reference.

1. Dispatch on the CPU: CPU JAX arrays, other libraries, wrong dtypes, empty arrays and every
   traced array are refused; a CPU run imports neither CuPy nor Numba (checked in a fresh
   interpreter).
2. A fake GPU: the platform check says "GPU", the DLPack conversions are stand-ins through
   NumPy (read-only input views, as JAX buffers are immutable) and the kernels are NumPy
   stand-ins.  It shows the JAX-facing plumbing: the ``custom_jvp`` primal and the JVP rule
   (where its primal is concrete: eager ``grad``/``jvp``/``jacfwd``) return correct JAX arrays,
   ``face_statistics`` hands the kernel JAX-drawn int32 seeds and returns JAX arrays, and under
   ``jit``/``vmap`` (and ``grad`` inside ``jit``) the fast path is not taken, with results equal
   to the reference path.
3. A real GPU (skipped with the reason when JAX has no GPU device, CuPy is absent, or Numba sees
   no GPU): the public functions take the kernels, agree with the reference within 1e-5, return
   JAX arrays on the same device, and read nothing back to the host.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import device_guards, to_numpy

jax = pytest.importorskip("jax", reason="jax is not installed: the JAX fast paths are untested")
jax.config.update("jax_enable_x64", True)

import array_api_compat.numpy as anp  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import mixedarray as ma  # noqa: E402
from mixedarray import face_frequencies as fs_module  # noqa: E402
from mixedarray import projections as P  # noqa: E402
from mixedarray import random as ma_random  # noqa: E402
from mixedarray._native import cuda_faces, cuda_interop, cuda_threshold, reference_only  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("sparsemax", "entmax15")
LOC = [[0.4, 0.1, -0.3], [1.0, -0.2, 0.3]]
SCALE = [[0.5, 0.8, 0.3], [0.3, 1.0, 0.7]]


def _scores(shape=(5, 7), seed=0, dtype="float64"):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype) * 2


# ---------------------------------------------------------------------------------------------
# 1. The dispatch decision on the CPU


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cpu_jax_arrays_take_the_reference(dtype, monkeypatch):
    def must_not_ask() -> bool:
        raise AssertionError("CuPy/Numba availability asked for a CPU array")

    monkeypatch.setattr(cuda_interop, "dlpack_available", must_not_ask)
    z = jnp.asarray(_scores(dtype=dtype))
    assert cuda_interop._cuda_device(z) is None
    assert not cuda_interop.jax_array_ok(z)

    def kernel(*args):
        raise AssertionError("the CUDA kernel was called for a CPU array")

    monkeypatch.setattr(cuda_threshold, "project", kernel)
    monkeypatch.setattr(cuda_faces, "launch_counts", kernel)
    for name in NAMES:
        y = getattr(ma, name)(z)
        np.testing.assert_allclose(np.asarray(y), P.reference(name, anp, np.asarray(z)), atol=1e-6)
    d = ma.GaussianSparsemax(jnp.asarray(LOC, dtype=dtype), jnp.asarray(SCALE, dtype=dtype))
    assert not cuda_faces.applicable(d, False)
    assert not fs_module._fused(d, False)
    stats = ma.face_statistics(d, jax.random.key(0), 1000)
    assert isinstance(stats.marginals.value, jax.Array)


def test_other_arrays_and_empty_calls_are_refused(monkeypatch):
    monkeypatch.setattr(cuda_interop, "_cuda_device", lambda x: "gpu:0")
    monkeypatch.setattr(cuda_interop, "dlpack_available", lambda: True)
    assert not cuda_interop.jax_array_ok()
    assert not cuda_interop.jax_array_ok(np.ones(3))
    assert not cuda_interop.jax_array_ok(1.0)
    if importlib.util.find_spec("torch") is not None:
        import torch

        assert not cuda_interop.jax_array_ok(torch.ones(3))
    assert cuda_interop.jax_array_ok(jnp.ones(3), jnp.zeros((2, 3)))  # the fake GPU says yes


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "int32", "bool"])
def test_only_float32_and_float64_go_to_the_kernels(dtype, monkeypatch):
    monkeypatch.setattr(cuda_interop, "_cuda_device", lambda x: "gpu:0")
    monkeypatch.setattr(cuda_interop, "dlpack_available", lambda: True)
    assert not cuda_interop.jax_array_ok(jnp.ones(3, dtype=dtype))


def test_empty_and_mixed_device_arrays_are_refused(monkeypatch):
    monkeypatch.setattr(cuda_interop, "dlpack_available", lambda: True)
    monkeypatch.setattr(cuda_interop, "_cuda_device", lambda x: "gpu:0")
    assert not cuda_interop.jax_array_ok(jnp.ones((0, 3)))
    monkeypatch.setattr(cuda_interop, "_cuda_device", lambda x: f"gpu:{x.shape[0]}")
    assert not cuda_interop.jax_array_ok(jnp.ones((1, 3)), jnp.ones((2, 3)))
    assert cuda_interop.jax_array_ok(jnp.ones((2, 3)), jnp.zeros((2, 3)))


def test_traced_arrays_are_refused_before_the_platform_is_asked(monkeypatch):
    asked = []
    monkeypatch.setattr(cuda_interop, "_cuda_device", lambda x: asked.append(x) or "gpu:0")
    monkeypatch.setattr(cuda_interop, "dlpack_available", lambda: True)
    seen = []

    def probe(z):
        seen.append(cuda_interop.jax_array_ok(z))
        return z.sum()

    z = jnp.ones((2, 3))
    jax.jit(probe)(z)
    jax.vmap(probe)(z)
    jax.grad(probe)(z)
    jax.jit(jax.grad(probe))(z)
    assert seen == [False] * 4
    assert asked == []


def test_dlpack_route_availability_is_a_quiet_answer():
    # Without CuPy or a GPU this is False; on a GPU machine with CuPy, True.  Never an error.
    assert isinstance(cuda_interop.dlpack_available(), bool)
    if importlib.util.find_spec("cupy") is None:
        assert not cuda_interop.dlpack_available()


def test_cpu_run_imports_neither_cupy_nor_numba():
    """A fresh interpreter: JAX CPU projections, their gradients and face statistics load no
    CuPy, no Numba and no kernel module."""
    body = textwrap.dedent(
        """
        import sys
        import jax
        import jax.numpy as jnp
        import mixedarray as ma

        z = jnp.asarray([[0.3, 1.2, -0.4], [2.0, 0.1, 0.0]])
        ma.sparsemax(z)
        ma.entmax15(z)
        jax.grad(lambda z: ma.sparsemax(z)[0, 1])(z)
        jax.jit(ma.entmax15)(z)
        d = ma.GaussianSparsemax(z, jnp.ones_like(z))
        ma.face_statistics(d, jax.random.key(0), 100)
        light = ("mixedarray._native.cuda_interop", "mixedarray._native.cuda_faces")
        loaded = [m for m in sys.modules if m.split(".")[0] in ("cupy", "cupyx", "numba")]
        loaded += [m for m in sys.modules
                   if m.startswith("mixedarray._native.cuda_") and m not in light]
        print("LOADED", sorted(loaded))
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "JAX_PLATFORMS": "cpu",
    }
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", body],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout, result.stdout


# ---------------------------------------------------------------------------------------------
# 2. A fake GPU: the platform check, the DLPack conversions and the kernels are stand-ins


class FakeGpu:
    """Records what crossed the fake DLPack boundary and which fake kernels ran."""

    def __init__(self) -> None:
        self.to_cupy: list[np.ndarray] = []
        self.to_jax: list[np.ndarray] = []
        self.projected: list[str] = []
        self.launches: list[list[int]] = []

    def view(self, x):
        """``to_cupy``: a read-only host "view" (kernels must never write to JAX's buffers)."""
        assert isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)
        a = np.array(x)
        a.setflags(write=False)
        self.to_cupy.append(a)
        return a

    def back(self, y):
        """``to_jax``: the kernel's output (a fresh allocation) as a JAX array."""
        assert isinstance(y, np.ndarray)
        assert not any(np.shares_memory(y, v) for v in self.to_cupy), "an input view came back"
        self.to_jax.append(y)
        return jnp.asarray(y)

    def project(self, name, x):
        """``cuda_threshold.project`` on a "CuPy" array: the NumPy reference, same dtype."""
        assert isinstance(x, np.ndarray) and str(x.dtype) in ("float32", "float64")
        self.projected.append(name)
        return np.array(P.reference(name, anp, x))

    def launch_counts(self, loc, scale, seeds, sizes, counts, *, stream=0, device=0, **kw):
        """``cuda_faces.launch_counts``: draws from the seeds in NumPy, counted into ``counts``."""
        assert seeds.dtype == np.int32 and seeds.shape == (len(sizes), 2)
        assert np.all(seeds >= 0)
        assert counts.dtype == np.float64 and counts.flags.writeable
        members, width = loc.shape
        for i, n in enumerate(sizes):
            g = np.random.default_rng([int(seeds[i, 0]), int(seeds[i, 1])])
            z = loc + scale * g.standard_normal((n, members, width))
            mask = P.reference("sparsemax", anp, z) > 0
            size = mask.sum(-1)
            counts[:, 0, :] += (size[..., None] == np.arange(1, width + 1)).sum(0)
            counts[:, 1, :] += mask.sum(0)
        self.launches.append(list(sizes))


@pytest.fixture
def fake_gpu(monkeypatch):
    fake = FakeGpu()
    monkeypatch.setattr(cuda_interop, "_cuda_device", lambda x: "fake-gpu:0")
    monkeypatch.setattr(cuda_interop, "dlpack_available", lambda: True)
    monkeypatch.setattr(cuda_interop, "to_cupy", fake.view)
    monkeypatch.setattr(cuda_interop, "to_jax", fake.back)
    monkeypatch.setattr(cuda_threshold, "project", fake.project)
    monkeypatch.setattr(cuda_faces, "launch_counts", fake.launch_counts)
    return fake


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_fake_gpu_projections_take_the_kernel(fake_gpu, name, dtype):
    z_np = _scores((4, 3, 9), seed=1, dtype=dtype)
    z_np[0, 0, :4] = -np.inf  # masked entries
    z = jnp.asarray(z_np)
    y = getattr(ma, name)(z)
    assert fake_gpu.projected == [name]
    assert len(fake_gpu.to_cupy) == 1 and len(fake_gpu.to_jax) == 1
    assert isinstance(y, jax.Array) and y.dtype == z.dtype and y.shape == z.shape
    exact = P.reference(name, anp, z_np.astype(np.float64))
    np.testing.assert_allclose(np.asarray(y), exact, rtol=0, atol=1e-6)
    # Another axis: moved to the end before the kernel, moved back after.
    y1 = getattr(ma, name)(z, axis=1)
    assert fake_gpu.projected == [name, name]
    exact1 = np.moveaxis(P.reference(name, anp, np.moveaxis(z_np.astype(np.float64), 1, -1)), -1, 1)
    np.testing.assert_allclose(np.asarray(y1), exact1, rtol=0, atol=1e-6)


def test_fake_gpu_reference_only_switches_the_kernels_off(fake_gpu):
    from mixedarray._native import reference_only

    z = jnp.asarray(_scores(seed=6))
    d = _gaussian_sparsemax()
    with reference_only():
        y = ma.sparsemax(z)
        ma.entmax15(z)
        assert not fs_module._fused(d, False)
        ma.face_statistics(d, jax.random.key(0), 500)
    assert fake_gpu.projected == [] and fake_gpu.launches == [] and fake_gpu.to_cupy == []
    np.testing.assert_allclose(np.asarray(y), P.reference("sparsemax", anp, np.asarray(z)))
    ma.sparsemax(z)
    assert fake_gpu.projected == ["sparsemax"]


def test_fake_gpu_half_precision_is_computed_in_float32(fake_gpu):
    z = jnp.asarray(_scores((3, 5), seed=2), dtype=jnp.float16)
    y = ma.sparsemax(z)
    assert y.dtype == jnp.float16
    assert fake_gpu.to_cupy[0].dtype == np.float32  # the kernel saw float32
    exact = P.reference("sparsemax", anp, np.asarray(z).astype(np.float64))
    np.testing.assert_allclose(np.asarray(y, dtype=np.float64), exact, atol=2e-3)


@pytest.mark.parametrize("name", NAMES)
def test_fake_gpu_jvp_rule_uses_the_kernel_where_the_primal_is_concrete(fake_gpu, name):
    fn = getattr(ma, name)
    z_np = _scores((3, 6), seed=3)
    z = jnp.asarray(z_np)
    w = jnp.asarray(np.arange(18.0).reshape(3, 6))
    dz = jnp.asarray(_scores((3, 6), seed=4))
    y_np = P.reference(name, anp, z_np)
    jvp_closed = (P.sparsemax_jvp if name == "sparsemax" else P.entmax15_jvp)(y_np, np.asarray(dz))

    y, ty = jax.jvp(fn, (z,), (dz,))  # eager forward mode: the rule's primal is concrete
    assert fake_gpu.projected == [name]
    np.testing.assert_allclose(np.asarray(y), y_np, atol=1e-12)
    np.testing.assert_allclose(np.asarray(ty), jvp_closed, atol=1e-12)

    g = jax.grad(lambda z: jnp.sum(fn(z) * w))(z)  # eager reverse mode: also concrete
    assert fake_gpu.projected == [name, name]
    vjp = P.sparsemax_vjp if name == "sparsemax" else P.entmax15_vjp
    np.testing.assert_allclose(np.asarray(g), vjp(y_np, np.asarray(w)), atol=1e-12)
    assert all(isinstance(a, jax.Array) for a in (y, ty, g))

    # Finite differences (every evaluation eager, through the fake kernel) agree.
    check_grads(fn, (z,), order=2, modes=["fwd", "rev"], eps=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_fake_gpu_traced_calls_take_the_reference(fake_gpu, name):
    fn = getattr(ma, name)
    z_np = _scores((3, 6), seed=5)
    z = jnp.asarray(z_np)
    w = jnp.asarray(np.arange(18.0).reshape(3, 6))

    def loss(z):
        return jnp.sum(fn(z) * w)

    y_jit = jax.jit(fn)(z)
    y_vmap = jax.vmap(fn)(z)
    g_jit = jax.jit(jax.grad(loss))(z)
    # A concrete constant, still staged under jit (validate_args=False: value checks of a
    # captured concrete array inside jit are a separate matter).
    y_closure = jax.jit(lambda: fn(z, validate_args=False))()
    jac = jax.jit(jax.jacrev(fn))(z[0])
    assert fake_gpu.projected == []
    assert fake_gpu.to_cupy == []
    y_np = P.reference(name, anp, z_np)
    for y in (y_jit, y_vmap, y_closure):
        np.testing.assert_allclose(np.asarray(y), y_np, atol=1e-12)
    vjp = P.sparsemax_vjp if name == "sparsemax" else P.entmax15_vjp
    np.testing.assert_allclose(np.asarray(g_jit), vjp(y_np, np.asarray(w)), atol=1e-12)
    assert jac.shape == (6, 6)
    # The same calls eagerly do take the kernel.
    fn(z)
    assert fake_gpu.projected == [name]


def _gaussian_sparsemax(dtype="float64"):
    return ma.GaussianSparsemax(jnp.asarray(LOC, dtype=dtype), jnp.asarray(SCALE, dtype=dtype))


def _reference_statistics(d, rng, n, **kw):
    original = fs_module._fused
    fs_module._fused = lambda d, table: False
    try:
        return ma.face_statistics(d, rng, n, **kw)
    finally:
        fs_module._fused = original


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fake_gpu_face_statistics_take_the_fused_kernel(fake_gpu, dtype):
    d = _gaussian_sparsemax(dtype)
    n = 30_000
    assert fs_module._fused(d, False)
    assert not fs_module._fused(d, True)  # a face table is never fused
    fused = ma.face_statistics(d, jax.random.key(7), n, chunk_size=12_000)
    assert fake_gpu.launches == [[12_000, 12_000, 6_000]]
    # loc, scale and the seeds crossed to "CuPy"; the seeds were drawn by JAX from the key.
    loc_view, scale_view, seeds_view = fake_gpu.to_cupy
    np.testing.assert_array_equal(loc_view, np.asarray(LOC, dtype=dtype))
    np.testing.assert_array_equal(scale_view, np.asarray(SCALE, dtype=dtype))
    expected_seeds = ma_random.seeds(jax.random.key(7), 3, like=d.loc)
    np.testing.assert_array_equal(seeds_view, np.asarray(expected_seeds))
    assert len(fake_gpu.to_jax) == 2  # the two count arrays came back
    for estimate in (fused.size_probs, fused.marginals):
        for a in estimate:
            assert isinstance(a, jax.Array) and str(a.dtype) == dtype and a.shape == (2, 3)
    assert fused.face_probs is None and fused.num_samples == n
    np.testing.assert_allclose(np.asarray(fused.size_probs.value).sum(-1), 1.0, rtol=1e-6)

    reference = _reference_statistics(d, jax.random.key(8), n)
    for a, b in ((fused.size_probs, reference.size_probs), (fused.marginals, reference.marginals)):
        value, ref = np.asarray(a.value, np.float64), np.asarray(b.value, np.float64)
        combined = np.hypot(np.asarray(a.stderr), np.asarray(b.stderr))
        assert np.max(np.abs(value - ref) / combined) < 4.5
        # Negative control: the members swapped is a different law and fails the check.
        assert np.max(np.abs(value - ref[::-1]) / combined) > 4.5

    # The key decides the draws: the same key again gives the same counts.
    again = ma.face_statistics(d, jax.random.key(7), n, chunk_size=12_000)
    np.testing.assert_array_equal(
        np.asarray(again.marginals.value), np.asarray(fused.marginals.value)
    )


def test_fake_gpu_face_statistics_take_an_int_seed_and_a_legacy_key(fake_gpu):
    d = _gaussian_sparsemax()
    a = ma.face_statistics(d, 3, 2_000)
    b = ma.face_statistics(d, jax.random.PRNGKey(3), 2_000)
    assert len(fake_gpu.launches) == 2
    assert isinstance(a.marginals.value, jax.Array) and isinstance(b.marginals.value, jax.Array)


def test_fake_gpu_face_statistics_under_tracing_take_the_reference(fake_gpu):
    d = _gaussian_sparsemax()
    n = 3_000
    key = jax.random.key(11)
    expected = _reference_statistics(d, key, n)  # eager: its projections take the kernel
    fake_gpu.to_cupy.clear()
    fake_gpu.projected.clear()

    # A traced key with concrete parameters: the kernel could be chosen, but the seeds are
    # traced, so the reference draws run, the very draws of the reference path.
    by_key = jax.jit(lambda k: ma.face_statistics(d, k, n).marginals.value)(key)
    # The whole call staged by jit (every input a constant).
    staged = jax.jit(lambda: ma.face_statistics(d, key, n).size_probs.value)()
    # Traced parameters: not even considered.
    by_params = jax.jit(lambda d, k: ma.face_statistics(d, k, n).marginals.value)(d, key)
    # A batch of keys under vmap.
    batched = jax.vmap(lambda k: ma.face_statistics(d, k, n).marginals.value)(
        jax.random.split(key, 2)
    )
    assert fake_gpu.launches == [] and fake_gpu.to_cupy == [] and fake_gpu.projected == []
    np.testing.assert_allclose(np.asarray(by_key), np.asarray(expected.marginals.value))
    np.testing.assert_allclose(np.asarray(staged), np.asarray(expected.size_probs.value))
    np.testing.assert_allclose(np.asarray(by_params), np.asarray(expected.marginals.value))
    assert batched.shape == (2, 2, 3)


def _fake_launch_sums(fake):
    """``cuda_entropy.launch_sums`` on "CuPy" (NumPy) arrays: draws from the seeds, projects
    and scores with the NumPy reference, adds ``Σ h`` and ``Σ h²`` to ``sums``."""

    def launch_sums(loc, scale, seeds, sizes, sums, *, num_nodes=32, **kw):
        assert seeds.dtype == np.int32 and seeds.shape == (len(sizes), 2)
        assert sums.dtype == np.float64 and sums.flags.writeable
        members, width = loc.shape
        d = ma.GaussianSparsemax(np.asarray(loc, np.float64), np.asarray(scale, np.float64))
        for i, n in enumerate(sizes):
            g = np.random.default_rng([int(seeds[i, 0]), int(seeds[i, 1])])
            y = P.reference("sparsemax", anp, loc + scale * g.standard_normal((n, members, width)))
            h = -np.asarray(d.log_prob(y))
            sums[:, 0] += h.sum(0)
            sums[:, 1] += (h * h).sum(0)
        fake.launches.append(list(sizes))

    return launch_sums


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fake_gpu_entropy_takes_the_fused_kernel(fake_gpu, monkeypatch, dtype):
    from mixedarray import information
    from mixedarray._native import cuda_entropy

    monkeypatch.setattr(cuda_entropy, "launch_sums", _fake_launch_sums(fake_gpu))
    d = _gaussian_sparsemax(dtype)
    n = 20_000
    assert information._fused_entropy(d)
    fused = ma.entropy(d, method="mc", rng=jax.random.key(5), num_samples=n, return_stderr=True)
    assert len(fake_gpu.launches) == 1 and sum(fake_gpu.launches[0]) == n
    loc_view, scale_view, seeds_view = fake_gpu.to_cupy
    np.testing.assert_array_equal(loc_view, np.asarray(LOC, dtype=dtype))
    np.testing.assert_array_equal(scale_view, np.asarray(SCALE, dtype=dtype))
    expected_seeds = ma_random.seeds(jax.random.key(5), len(fake_gpu.launches[0]), like=d.loc)
    np.testing.assert_array_equal(seeds_view, np.asarray(expected_seeds))
    for a in fused:
        assert isinstance(a, jax.Array) and str(a.dtype) == dtype and a.shape == (2,)

    wrong = ma.GaussianSparsemax(d.loc, d.scale * 1.5)  # a planted wrong law
    with reference_only():
        assert not information._fused_entropy(d)
        reference, planted = (
            ma.entropy(e, method="mc", rng=jax.random.key(6), num_samples=n, return_stderr=True)
            for e in (d, wrong)
        )
    assert len(fake_gpu.launches) == 1  # the reference path launched nothing
    for other, agrees in ((reference, True), (planted, False)):
        value, ref = (np.asarray(e.value, np.float64) for e in (fused, other))
        combined = np.hypot(np.asarray(fused.stderr), np.asarray(other.stderr))
        assert bool(np.max(np.abs(value - ref) / combined) < 4.5) is agrees


def test_fake_gpu_entropy_under_tracing_takes_the_reference(fake_gpu, monkeypatch):
    from mixedarray._native import cuda_entropy

    monkeypatch.setattr(cuda_entropy, "launch_sums", _fake_launch_sums(fake_gpu))
    d = _gaussian_sparsemax()
    key = jax.random.key(9)

    def estimate(d, k):
        return ma.entropy(d, method="mc", rng=k, num_samples=2_000)

    with reference_only():
        expected = np.asarray(estimate(d, key))
    by_key = jax.jit(lambda k: estimate(d, k))(key)  # concrete parameters, a traced key
    by_params = jax.jit(estimate)(d, key)  # traced parameters: not even considered
    assert fake_gpu.launches == [] and fake_gpu.to_cupy == []
    np.testing.assert_allclose(np.asarray(by_key), expected, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(by_params), expected, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# 3. A real GPU


def _jax_gpu():
    """The first JAX GPU device, or skip with the reason the real-GPU tests cannot run."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        pytest.skip("the CUDA simulator is enabled in this process")
    try:
        devices = jax.devices("gpu")
    except RuntimeError:
        devices = []
    if not devices:
        pytest.skip("no GPU device for jax")
    if importlib.util.find_spec("cupy") is None:
        pytest.skip("cupy is not installed (the DLPack route goes through CuPy)")
    if not cuda_interop.available():
        pytest.skip("Numba sees no CUDA GPU (numba.cuda.is_available() is False)")
    if not cuda_interop.dlpack_available():
        pytest.skip("CuPy sees no CUDA device")
    return devices[0]


def _gpu_inputs():
    rng = np.random.default_rng(23)
    return {
        "8x1000": rng.normal(size=(8, 1000)),
        "64x16": rng.normal(size=(64, 16)) * 3,
        "2x6000": rng.normal(size=(2, 6000)),
        "masked": np.where(rng.random((4, 50)) < 0.5, -np.inf, rng.normal(size=(4, 50))),
    }


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_gpu_public_functions_take_the_kernels(name, dtype, monkeypatch):
    device = _jax_gpu()
    calls = []
    original = cuda_threshold.project
    monkeypatch.setattr(cuda_threshold, "project", lambda *a: calls.append(a[0]) or original(*a))
    for label, z_np in _gpu_inputs().items():
        z_np[:, 0] = np.where(np.isneginf(z_np[:, 0]), 0.0, z_np[:, 0])
        z = jax.device_put(jnp.asarray(z_np, dtype=dtype), device)
        with device_guards("jax"):
            y = getattr(ma, name)(z)
            y.block_until_ready()
        assert isinstance(y, jax.Array) and y.dtype == z.dtype and y.shape == z.shape
        assert y.devices() == {device}, label
        same_dtype = to_numpy(P.reference(name, jnp, z))
        exact = P.reference(name, anp, z_np.astype(np.float64))
        out = to_numpy(y)
        assert np.array_equal(out > 0, same_dtype > 0), label
        tol = 1e-5 if dtype == "float32" else 1e-10
        np.testing.assert_allclose(out, exact, rtol=0, atol=tol, err_msg=label)
    assert calls == [name] * len(_gpu_inputs())


@pytest.mark.parametrize("name", NAMES)
def test_gpu_gradients_and_jit(name, monkeypatch):
    device = _jax_gpu()
    calls = []
    original = cuda_threshold.project
    monkeypatch.setattr(cuda_threshold, "project", lambda *a: calls.append(a[0]) or original(*a))
    fn = getattr(ma, name)
    z_np = np.random.default_rng(4).normal(size=(256, 512)).astype(np.float32) * 2
    z = jax.device_put(jnp.asarray(z_np), device)
    w = jax.device_put(jnp.arange(512, dtype=jnp.float32), device)
    with device_guards("jax"):
        g = jax.grad(lambda z: jnp.sum(fn(z) * w))(z)  # eager: the kernel in the primal
        y_jit = jax.jit(fn)(z)  # traced: the reference
        g.block_until_ready()
    assert calls == [name]
    assert g.devices() == {device} and y_jit.devices() == {device}
    exact = P.reference(name, anp, z_np.astype(np.float64))
    np.testing.assert_allclose(to_numpy(y_jit), exact, rtol=0, atol=1e-5)
    vjp = P.sparsemax_vjp if name == "sparsemax" else P.entmax15_vjp
    closed = vjp(exact, np.broadcast_to(np.arange(512.0), exact.shape))
    np.testing.assert_allclose(to_numpy(g), closed, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpu_face_statistics_take_the_fused_kernel(dtype, monkeypatch):
    device = _jax_gpu()
    loc = jax.device_put(jnp.asarray(LOC, dtype=dtype), device)
    scale = jax.device_put(jnp.asarray(SCALE, dtype=dtype), device)
    d = ma.GaussianSparsemax(loc, scale)
    calls = []
    original = cuda_faces.launch_counts
    monkeypatch.setattr(
        cuda_faces, "launch_counts", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    n = 2_000_000
    key = jax.device_put(jax.random.key(7), device)
    with device_guards("jax"):
        fused = ma.face_statistics(d, key, n, chunk_size=700_000)
        fused.marginals.value.block_until_ready()
    assert calls == [1]
    for estimate in (fused.size_probs, fused.marginals):
        for a in estimate:
            assert isinstance(a, jax.Array) and str(a.dtype) == dtype
            assert a.devices() == {device}
    reference = _reference_statistics(d, jax.random.key(8), n)
    for a, b in ((fused.size_probs, reference.size_probs), (fused.marginals, reference.marginals)):
        value, ref = to_numpy(a.value), to_numpy(b.value)
        combined = np.hypot(to_numpy(a.stderr), to_numpy(b.stderr))
        assert np.max(np.abs(value - ref) / combined) < 4.5
        # Negative control: the members swapped is a different law and fails the check.
        assert np.max(np.abs(value - ref[::-1]) / combined) > 4.5
    np.testing.assert_allclose(to_numpy(fused.size_probs.value).sum(-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpu_entropy_takes_the_fused_kernel(dtype, monkeypatch):
    from mixedarray._native import cuda_entropy

    device = _jax_gpu()
    loc = jax.device_put(jnp.asarray(LOC, dtype=dtype), device)
    scale = jax.device_put(jnp.asarray(SCALE, dtype=dtype), device)
    d = ma.GaussianSparsemax(loc, scale)
    calls = []
    original = cuda_entropy.launch_sums
    monkeypatch.setattr(
        cuda_entropy, "launch_sums", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    n = 400_000
    key = jax.device_put(jax.random.key(3), device)
    with device_guards("jax"):
        fused = ma.entropy(d, method="mc", rng=key, num_samples=n, return_stderr=True)
        fused.value.block_until_ready()
    assert calls == [1]
    for a in fused:
        assert isinstance(a, jax.Array) and str(a.dtype) == dtype and a.devices() == {device}
    with reference_only():
        reference = ma.entropy(
            d, method="mc", rng=jax.random.key(4), num_samples=n // 4, return_stderr=True
        )
    combined = np.hypot(to_numpy(fused.stderr), to_numpy(reference.stderr))
    assert np.max(np.abs(to_numpy(fused.value) - to_numpy(reference.value)) / combined) < 4
