"""The Numba CUDA fast paths: kernels in Numba's CUDA simulator, dispatch on a real GPU.

1. Simulator (always runs, CI included).  ``NUMBA_ENABLE_CUDASIM=1`` must be set before
   ``numba.cuda`` is imported, so each check runs in a fresh interpreter; there the kernels run
   on small host arrays (every thread a Python thread), launched through the same host code
   the public functions use (``launch_rows``, ``launch_vjp``, ``launch_counts``), and are held
   to the standard-API reference: the same support and values within 1e-6 (float32) / 1e-12
   (float64) of the float64 reference, ties, ``-inf`` entries, all ``-inf`` rows, K = 1, and
   every path of the block kernel (row in shared memory, candidates in shared memory,
   candidates overflowing to global memory) by a small shared buffer and block.  Face
   counts are held to the reference ``face_statistics`` within 4.5 combined standard errors,
   with a planted wrong law that must fail the same check.  Where libNVVM is installed (no GPU
   needed), every kernel the launchers pick also compiles to sm_90 PTX with the argument types
   of a real launch, and assembles with ``ptxas`` when it is on the PATH.
2. In process, without a GPU: ``random.seeds`` on every backend, and the fallbacks (no fast
   path is taken where none applies).
3. Real GPU (skipped with the reason when Numba sees no GPU, or torch-CUDA / CuPy is absent):
   the public functions on torch CUDA tensors and CuPy arrays take the kernels, agree with the
   reference path, keep results on the device and read nothing back to the host.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import from_numpy, library_of, to_numpy

import mixedarray as ma
from mixedarray import _backend
from mixedarray import face_frequencies as fs_module
from mixedarray import random as ma_random
from mixedarray._native import cuda_faces, cuda_interop, cuda_threshold

try:  # host reads raise inside (where the test helpers have device guards)
    from helpers import device_guards
except ImportError:  # pragma: no cover - helpers without guards

    def device_guards(library: str) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# 1. Numba's CUDA simulator


def simulate(body: str) -> str:
    """Run ``body`` with the CUDA simulator in a fresh interpreter; fail with its stderr."""
    env = {
        **os.environ,
        "NUMBA_ENABLE_CUDASIM": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    prologue = textwrap.dedent(
        """
        import sys
        import warnings
        # Simulated threads are Python threads that wait on each other at every syncthreads:
        # switching threads every 0.5 ms instead of 5 ms makes the kernels ~6x quicker.
        sys.setswitchinterval(5e-4)
        # xoroshiro128+ and SplitMix64 wrap around on purpose; NumPy scalars warn about it.
        warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
        import numpy as np
        from numba import config
        assert config.ENABLE_CUDASIM, "the CUDA simulator is not enabled"
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", prologue + textwrap.dedent(body)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


needs_cudasim = pytest.mark.skipif(
    importlib.util.find_spec("numba") is None or importlib.util.find_spec("numba.cuda") is None,
    reason="numba (with its CUDA target) is not installed",
)

ROWS_CHECK = """
import array_api_compat.numpy as anp
from mixedarray import projections as P
from mixedarray._native.cuda_threshold import launch_rows

TOL = {"float32": 1e-6, "float64": 1e-12}

def check(name, z, dtype, label, **launch):
    z = np.ascontiguousarray(np.asarray(z, dtype=float).astype(dtype))
    out = np.full_like(z, np.nan)
    launch_rows(name, z, out, **launch)
    ref = P.reference(name, anp, z)
    exact = P.reference(name, anp, z.astype(np.float64))
    where = f"{name} {dtype} {label} {launch}"
    assert out.dtype == z.dtype, where
    assert np.array_equal(out > 0, ref > 0), f"{where}: support differs\\n{out}\\n{ref}"
    err = np.max(np.abs(out - exact))
    assert err <= TOL[dtype], f"{where}: error {err}"
    some = np.isfinite(z).any(axis=-1)  # rows of all -inf are uniform
    assert np.all(out[some][np.isneginf(z[some])] == 0), where

def tie_rows():
    # τ = 0 exactly: entries at the threshold must be exact zeros (as in test_projections)
    ties = np.full((6, 5), -np.inf)
    ties[:, :3] = [[1, 0, 0], [1, 1, 0], [2, 1, 1], [2, 0, 0], [3, 1, 1], [4, 2, 2]]
    face = [0, 0, 1, .5, 1, -.5, -1, 0, -.5, -.5, .5, 0, .5, 1, -.5, .5]
    return {"ties": ties, "sparsemax-vertex": [[1.0, 0, 0, 0, 0]],
            "entmax15-vertex": [[2.0, 0, 0, 0, 0]], "entmax15-face": [face]}

def rows(rng, k):
    z = np.concatenate([rng.normal(size=(1, k)) * s for s in (1e-3, 1.0, 1e3)]
                       + [rng.normal(size=(1, k)) + 1e6])
    masked = rng.normal(size=(3, k)) * 2
    masked[rng.random(masked.shape) < 0.5] = -np.inf
    masked[:, 0] = rng.normal(size=3)
    masked[1, :] = -np.inf
    masked[1, k // 2] = 4.0  # one finite entry
    masked[2, :] = -np.inf   # no finite entry: the uniform vector
    return {f"K{k}": z, f"K{k}-masked": masked}
"""


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@needs_cudasim
def test_simulated_thread_kernels_match_reference(dtype):
    """K ≤ 32: one thread per row."""
    simulate(
        ROWS_CHECK
        + f"""
rng = np.random.default_rng(3)
cases = {{**tie_rows(), **rows(rng, 1), **rows(rng, 2), **rows(rng, 7), **rows(rng, 32)}}
cases["choices"] = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], size=(6, 16))
for name in ("sparsemax", "entmax15"):
    for label, z in cases.items():
        check(name, z, "{dtype}", label)
print("ok")
"""
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@needs_cudasim
def test_simulated_block_kernels_match_reference(dtype):
    """One block of 32 threads per row, with a shared buffer of 16 entries: K ≤ 16 holds the
    row in shared memory; K = 17, 40 keep only the candidates, which fit when the maximum leads
    by more than 2 (sparse) and do not when every entry is within 1 of the maximum (overflow:
    global memory)."""
    simulate(
        ROWS_CHECK
        + f"""
rng = np.random.default_rng(5)
small = dict(small_k=0, capacity=16, threads=32)
cases = {{**tie_rows(), **rows(rng, 1), **rows(rng, 15), **rows(rng, 16), **rows(rng, 17)}}
sparse = rng.normal(size=(2, 40))
sparse[:, 0] = 10.0  # leads by > 2: the only candidate, the buffer never fills
wide = {{
    "sparse": sparse,
    "sparse-ties": [[1.0] + [0.0] * 19, [2.0] + [0.0] * 19, [1, 1] + [0.0] * 18],
    "overflow": rng.normal(size=(2, 40)) * 1e-3,  # 40 candidates > 16
    "K40": rng.normal(size=(2, 40)) * 2,
}}
for name in ("sparsemax", "entmax15"):
    for label, z in {{**cases, **wide}}.items():
        check(name, z, "{dtype}", label, **small)
    # a narrow block (8 threads, 25 entries each) refreshes its bound on the maximum
    check(name, rng.normal(size=(1, 200)) * 3, "{dtype}", "refresh",
          small_k=0, capacity=64, threads=8)
print("ok")
"""
    )


@needs_cudasim
def test_simulated_default_launch_shapes():
    """The shapes the public functions use: 128-thread blocks up to K = 1024."""
    simulate(
        ROWS_CHECK
        + """
rng = np.random.default_rng(7)
for name in ("sparsemax", "entmax15"):
    check(name, rng.normal(size=(1, 33)), "float32", "K33")
    check(name, rng.normal(size=(1, 300)) * 3, "float64", "K300")
print("ok")
"""
    )


@needs_cudasim
def test_simulated_vjp_kernels_match_closed_form():
    simulate(
        """
import array_api_compat.numpy as anp
from mixedarray import projections as P
from mixedarray._native.cuda_threshold import launch_vjp

rng = np.random.default_rng(11)
for dtype, tol in (("float32", 1e-6), ("float64", 1e-12)):
    for width, threads in ((1, 32), (5, 32), (40, 32), (40, 8)):
        z = rng.normal(size=(3, width))
        g = rng.normal(size=(3, width)).astype(dtype)
        for name, vjp in (("sparsemax", P.sparsemax_vjp), ("entmax15", P.entmax15_vjp)):
            y = P.reference(name, anp, z).astype(dtype)
            out = np.full_like(y, np.nan)
            launch_vjp(name, y, g, out, threads=threads)
            exact = vjp(y.astype(float), g.astype(float))
            err = np.max(np.abs(out - exact))
            assert err <= tol, (name, dtype, width, threads, err)
print("ok")
"""
    )


FACES_CHECK = """
import math
import mixedarray as ma
from mixedarray import random
from mixedarray._native.cuda_faces import launch_counts
from mixedarray.face_frequencies import face_statistics

def simulated(loc, scale, sizes, seed, dtype, blocks=2):
    loc = np.ascontiguousarray(np.atleast_2d(loc).astype(dtype))
    scale = np.ascontiguousarray(np.atleast_2d(scale).astype(dtype))
    seeds = random.seeds(seed, len(sizes), like=loc)
    counts = np.zeros((loc.shape[0], 2, loc.shape[1]))
    launch_counts(loc, scale, seeds, sizes, counts, threads=32, blocks=blocks)
    return counts

def z_max(counts, n, stats):
    worst = 0.0
    for row, ref in ((0, stats.size_probs), (1, stats.marginals)):
        p = counts[row] / n
        se = np.sqrt(p * (1 - p) / (n - 1))
        assert np.all(se < 0.1 * p), ("standard error over 10%", p, se)
        combined = np.sqrt(se**2 + np.asarray(ref.stderr) ** 2)
        worst = max(worst, float(np.max(np.abs(p - np.asarray(ref.value)) / combined)))
    return worst
"""


@needs_cudasim
def test_simulated_face_counts_match_reference_face_statistics():
    """Two batch members, three launches, float64 and float32, against the reference path
    (NumPy: noise, sparsemax, support) at 400k draws; the wrong law (loc permuted) fails."""
    simulate(
        FACES_CHECK
        + """
loc = np.array([[0.4, 0.1, -0.3], [1.0, -0.2, 0.3]])
scale = np.array([[0.5, 0.8, 0.3], [0.3, 1.0, 0.7]])
sizes = [3000, 3000, 2000]
n = sum(sizes)
for dtype in ("float64", "float32"):
    counts = simulated(loc, scale, sizes, 17, dtype)
    # exact identities: every draw has one size; the marginals add up to the sizes
    np.testing.assert_array_equal(counts[:, 0].sum(-1), n)
    np.testing.assert_array_equal(counts[:, 1].sum(-1), counts[:, 0] @ np.arange(1, 4))
    for member in range(2):
        ref = face_statistics(ma.GaussianSparsemax(loc[member], scale[member]), 1, 400_000)
        worst = z_max(counts[member], n, ref)
        assert worst < 4.5, (dtype, member, worst)
        wrong = face_statistics(
            ma.GaussianSparsemax(loc[member, ::-1].copy(), scale[member]), 2, 400_000)
        assert z_max(counts[member], n, wrong) > 4.5, (dtype, member, "control passed")
print("ok")
"""
    )


@needs_cudasim
def test_simulated_face_counts_identities_and_seeding():
    """Wider events (K = 20: 32-entry local arrays; K = 1), seeding: the same seeds give the
    same counts, and counts are exact integers however the draws fall on threads."""
    simulate(
        FACES_CHECK
        + """
rng = np.random.default_rng(2)
loc, scale = rng.normal(size=20), np.exp(rng.normal(size=20) * 0.3)
a = simulated(loc, scale, [300], 5, "float32")
b = simulated(loc, scale, [300], 5, "float32", blocks=1)
c = simulated(loc, scale, [300], 6, "float32")
assert a[0, 0].sum() == 300 and a[0, 1].sum() == a[0, 0] @ np.arange(1, 21)
np.testing.assert_array_equal(a, simulated(loc, scale, [300], 5, "float32"))
assert b[0, 0].sum() == 300
assert not np.array_equal(a, c)
one = simulated([0.3], [1.0], [100, 50], 1, "float64")
np.testing.assert_array_equal(one, [[[150.0], [150.0]]])
print("ok")
"""
    )


def compile_env() -> dict[str, str]:
    """The environment of a fresh interpreter that compiles for a real GPU (no simulator)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


@functools.cache
def nvvm_missing() -> str | None:
    """Why Numba cannot compile kernels to PTX here (no numba, no libNVVM), or None.

    Asked in a fresh interpreter without the simulator, as the compiling tests run (with
    ``NUMBA_ENABLE_CUDASIM=1`` Numba reports libNVVM missing whether it is installed or not).
    """
    if importlib.util.find_spec("numba") is None:
        return "numba is not installed"
    probe = "from numba.cuda.cudadrv import nvvm; nvvm.NVVM()"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=compile_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:  # no CUDA toolkit: nothing to compile with
        error = (result.stderr.strip().splitlines() or ["no message"])[-1]
        return f"libNVVM is not available ({error[:200]})"
    return None


COMPILE_ALL = r"""
import re
import shutil
import subprocess
import tempfile
import time
import types
from pathlib import Path

import numba.cuda.dispatcher as dispatcher
import numpy as np
from numba import cuda
from numba.cuda.cudadrv.devicearray import DeviceNDArrayBase

# Device functions ask the current device for its compute capability: there is none.
dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))

from mixedarray._native import cuda_entropy, cuda_faces, cuda_interop, cuda_threshold


class OnDevice:
    # A C-contiguous torch/CuPy CUDA array as Numba types it (cuda.as_cuda_array): Numba's
    # own typing rule of device arrays, on a shape and dtype alone.
    _numba_type_ = DeviceNDArrayBase._numba_type_

    def __init__(self, shape, dtype):
        layout = np.empty(shape, dtype)  # for the shape, strides and flags only
        self.shape, self.ndim, self.dtype = layout.shape, layout.ndim, layout.dtype
        self.strides, self.flags = layout.strides, layout.flags


launches = {}  # (kernel, argument types) -> the first launch with them
label = ""


def record(kernel, grid, block, stream, *args, device=0):
    argument_types = tuple(kernel.typeof_pyval(a) for a in args)  # as a real launch types them
    launches.setdefault((kernel, argument_types), f"{label} [{grid}, {block}]")


cuda_interop.launch = record  # the launchers' single way to a kernel
cuda_interop.multiprocessors = lambda: 132  # an H100

for dtype in ("float32", "float64"):
    for width in (8, 1000, 5000):  # one thread per row; blocks of 128 and of 256 threads
        x, out = OnDevice((3, width), dtype), OnDevice((3, width), dtype)
        for name in ("sparsemax", "entmax15"):
            label = f"launch_rows {name} {dtype} K={width}"
            cuda_threshold.launch_rows(name, x, out)
    for width in (8, 100, 5000):  # blocks of 32, 128 and 256 threads
        y, g, out = (OnDevice((3, width), dtype) for _ in range(3))
        for name in ("sparsemax", "entmax15"):
            label = f"launch_vjp {name} {dtype} K={width}"
            cuda_threshold.launch_vjp(name, y, g, out)
    seeds = OnDevice((2, 2), "int32")  # random.seeds: int32 (chunks, 2)
    for width in (3, 20, 50, cuda_faces.MAX_K):  # size classes 16, 32, 64, 128
        loc, scale = OnDevice((2, width), dtype), OnDevice((2, width), dtype)
        label = f"launch_counts {dtype} K={width}"
        cuda_faces.launch_counts(loc, scale, seeds, [1 << 20, 7], OnDevice((2, 2, width), "f8"))
    # the smallest size class with the default rule, the largest with the most nodes allowed
    for width, nodes in ((3, 32), (cuda_entropy.MAX_K, cuda_entropy._MAX_NODES)):
        loc, scale = OnDevice((2, width), dtype), OnDevice((2, width), dtype)
        with np.errstate(all="ignore"):  # hermegauss overflows for many nodes: not a typing matter
            label = f"launch_sums {dtype} K={width} nodes={nodes}"
            cuda_entropy.launch_sums(
                loc, scale, seeds, [1 << 20, 7], OnDevice((2, 2), "f8"), num_nodes=nodes
            )
            label = f"launch_points {dtype} K={width} nodes={nodes}"
            one, z = OnDevice((width,), dtype), OnDevice((5, width), dtype)
            cuda_entropy.launch_points(one, one, z, z, OnDevice((5,), "f8"), num_nodes=nodes)

# 2 dtypes x (thread-per-row 2 + block 2 x 2 + VJP 3 x 2 + faces 4 + entropy 2 + points 2)
assert len(launches) == 40, sorted(launches.values())
ptxas = shutil.which("ptxas")
print(f"{len(launches)} kernels to sm_90 PTX; ptxas: {ptxas or 'not found'}")
numbers = {
    "regs": r"Used (\d+) registers",
    "local": r"(\d+) bytes stack frame",
    "spill": r"(\d+) bytes spill stores",
    "smem": r"(\d+) bytes smem",
}
start = time.perf_counter()
with tempfile.TemporaryDirectory() as scratch:
    assembling = []  # ptxas runs beside the next NVVM compile
    for i, ((kernel, signature), where) in enumerate(launches.items()):
        try:
            ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0))
        except Exception as error:
            raise AssertionError(f"{where} does not compile for {signature}") from error
        assert ptx.count(".entry") == 1 and ".target sm_90" in ptx, where
        run = None
        if ptxas:
            source = Path(scratch, f"{i}.ptx")
            source.write_text(ptx)
            run = subprocess.Popen(
                [ptxas, "-arch=sm_90", "-v", "-o", str(source.with_suffix(".cubin")), str(source)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        assembling.append((where, signature, run))
    for where, signature, run in assembling:
        line = f"{where:<58}"
        if run is not None:
            _, info = run.communicate()
            if "Unsupported .version" in info:  # a ptxas older than this libNVVM: no figures
                line += " (ptxas too old for this PTX)"
            else:
                assert run.returncode == 0, f"{where}: ptxas failed\n{info}"
                for key, pattern in numbers.items():
                    found = re.search(pattern, info)
                    line += f" {key} {found.group(1) if found else 0:>5}"
        print(line, "|", ", ".join(map(str, signature)))
print(f"compiled in {time.perf_counter() - start:.1f} s (B: local, spill, smem)")
print("ok")
"""


@needs_cudasim
def test_every_launched_kernel_compiles_for_a_gpu():
    """The simulator runs Python; this types and compiles every kernel the launchers pick
    (``launch_rows``, ``launch_vjp``, ``launch_counts``, ``launch_sums``, ``launch_points``:
    every factory, size class and block size, float32 and float64) with NVVM to sm_90 PTX,
    with the argument types of a real launch (C-contiguous device arrays, Python ints and
    floats as int64 and float64), and assembles each with ``ptxas`` where it is installed
    (registers, local memory, spills and shared memory printed; see ``-s``).  Needs libNVVM,
    not a GPU."""
    reason = nvvm_missing()
    if reason:
        pytest.skip(reason)
    result = subprocess.run(
        [sys.executable, "-c", COMPILE_ALL],
        env=compile_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0 and "get_current_device" in result.stderr:
        pytest.skip("this Numba compiles device functions differently")  # pragma: no cover
    assert result.returncode == 0, result.stdout + result.stderr
    print(result.stdout)


# ---------------------------------------------------------------------------------------------
# 2. In process, no GPU needed


@pytest.mark.parametrize("n", [0, 1, 3])
def test_seeds_shape_dtype_range_and_device(backend, n):
    xp, device = backend
    like = xp.zeros((2,), device=device)
    out = ma_random.seeds(5, n, like=like)
    assert _backend.library_name(out) == _backend.library_name(like)
    assert _backend.device(out) == _backend.device(like)
    assert tuple(out.shape) == (n, 2)
    assert "int32" in str(out.dtype)
    values = to_numpy(out)
    assert np.all((values >= 0) & (values < 2**31))
    np.testing.assert_array_equal(values, to_numpy(ma_random.seeds(5, n, like=like)))


def test_seeds_follow_the_callers_generator(cpu_backend):
    xp, device = cpu_backend
    like = xp.zeros((2,), device=device)
    library = library_of(cpu_backend)
    if library == "torch":
        import torch

        rng = torch.Generator().manual_seed(3)
    elif library == "jax":
        import jax

        rng = jax.random.key(3)
    else:
        rng = np.random.default_rng(3)
    first = to_numpy(ma_random.seeds(rng, 4, like=like))
    second = to_numpy(ma_random.seeds(rng, 4, like=like))
    assert len({tuple(r) for r in first}) == 4  # 62-bit seeds: no repeats
    if library == "jax":  # a key is used as given
        np.testing.assert_array_equal(first, second)
    else:  # a stateful generator advances
        assert not np.array_equal(first, second)
    with pytest.raises(ValueError, match="non-negative"):
        ma_random.seeds(rng, -1, like=like)


def test_seeds_trace_under_jax_jit():
    jax = pytest.importorskip("jax")
    like = jax.numpy.zeros(2)
    traced = jax.jit(lambda key: ma_random.seeds(key, 3, like=like))(jax.random.key(0))
    np.testing.assert_array_equal(traced, ma_random.seeds(jax.random.key(0), 3, like=like))


def test_fused_face_statistics_not_taken_where_it_does_not_apply(cpu_backend):
    """CPU arrays, face tables and other distributions keep the reference path."""
    loc = from_numpy(cpu_backend, np.array([0.4, 0.1, -0.3]))
    scale = from_numpy(cpu_backend, np.array([0.5, 0.8, 0.3]))
    d = ma.GaussianSparsemax(loc, scale)
    assert not fs_module._fused(d, False)
    assert not fs_module._fused(d, True)
    assert not cuda_faces.applicable(ma.NonEmptyBernoulli(loc), False)


def test_cupy_rules_not_registered_without_a_gpu(monkeypatch):
    assert "cupy" in _backend._ADAPTERS
    monkeypatch.setattr(cuda_threshold, "available", lambda: False)
    monkeypatch.setattr(_backend, "_RULES", {})
    cuda_threshold.register_cupy_rules()
    assert _backend._RULES == {}


def test_availability_is_a_quiet_answer():
    """``available()`` answers (False without a GPU) rather than raising: the fallback to the
    reference path is silent.  On a CPU tensor the torch adapter never asks."""
    assert cuda_interop.available() in (True, False)
    torch = pytest.importorskip("torch")
    from mixedarray import torch as adapter

    assert not adapter._native_cuda(torch.zeros(3))


# ---------------------------------------------------------------------------------------------
# 3. A real GPU


def _gpu_ready() -> str | None:
    """Why the real-GPU tests cannot run, or None."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return "the CUDA simulator is enabled in this process"
    if not cuda_interop.available():
        return "Numba sees no CUDA GPU (numba.cuda.is_available() is False)"
    return None


@pytest.fixture(params=["torch", "cupy"])
def gpu_library(request):
    """``(xp, device, library)`` for torch CUDA tensors and CuPy arrays on a real GPU."""
    reason = _gpu_ready()
    if reason:
        pytest.skip(reason)
    if request.param == "torch":
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("torch has no CUDA device")
        import array_api_compat.torch as xp

        return xp, torch.device("cuda"), "torch"
    pytest.importorskip("cupy")
    import array_api_compat.cupy as xp
    import cupy

    return xp, cupy.cuda.Device(0), "cupy"


def _on_gpu(gpu_library, values, dtype="float32"):
    xp, device, _ = gpu_library
    return xp.asarray(np.asarray(values, dtype=dtype), device=device)


def _gpu_inputs():
    rng = np.random.default_rng(23)
    return {
        "8x1000": rng.normal(size=(8, 1000)),
        "64x16": rng.normal(size=(64, 16)) * 3,
        "2x6000": rng.normal(size=(2, 6000)),
        "2x70000": rng.normal(size=(2, 70000)),
        "overflow": rng.normal(size=(2, 9000)) * 1e-3,
        "masked": np.where(rng.random((4, 50)) < 0.5, -np.inf, rng.normal(size=(4, 50))),
    }


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["sparsemax", "entmax15"])
def test_gpu_public_functions_take_the_kernels(gpu_library, name, dtype, monkeypatch):
    from mixedarray import projections as P

    calls = []
    original = cuda_threshold.project
    monkeypatch.setattr(cuda_threshold, "project", lambda *a: calls.append(a[0]) or original(*a))
    xp = gpu_library[0]
    for label, z_np in _gpu_inputs().items():
        z_np[:, 0] = np.where(np.isneginf(z_np[:, 0]), 0.0, z_np[:, 0])
        z = _on_gpu(gpu_library, z_np, dtype)
        with device_guards(gpu_library[2]):
            y = getattr(ma, name)(z)
        assert type(y) is type(z) and str(y.dtype) == str(z.dtype)
        assert y.device == z.device
        ref = to_numpy(P.reference(name, xp, z))
        exact = to_numpy(P.reference(name, xp, xp.astype(z, xp.float64)))
        out = to_numpy(y)
        assert np.array_equal(out > 0, ref > 0), label
        tol = 1e-6 if dtype == "float32" else 1e-12
        np.testing.assert_allclose(out, exact, rtol=0, atol=tol, err_msg=label)
    assert calls == [name] * len(_gpu_inputs())


def test_gpu_torch_kernel_runs_on_the_current_stream_and_backpropagates(gpu_library):
    if gpu_library[2] != "torch":
        pytest.skip("torch streams")
    import array_api_compat.numpy as anp
    import torch

    from mixedarray import projections as P

    z_np = np.random.default_rng(4).normal(size=(256, 512)).astype(np.float32)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        z = torch.tensor(z_np, device="cuda") * 2  # made on `stream`, then used there
        z.requires_grad_(True)
        y = ma.sparsemax(z)
        (y * torch.arange(512, device="cuda")).sum().backward()
    stream.synchronize()
    exact = P.reference("sparsemax", anp, z_np.astype(np.float64) * 2)
    np.testing.assert_allclose(to_numpy(y), exact, rtol=0, atol=1e-6)
    y_np = to_numpy(y).astype(np.float64)
    g = P.sparsemax_vjp(y_np, np.broadcast_to(np.arange(512.0), y_np.shape))
    np.testing.assert_allclose(to_numpy(z.grad), g, rtol=0, atol=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpu_face_statistics_take_the_fused_kernel(gpu_library, dtype, monkeypatch):
    library = gpu_library[2]
    loc = _on_gpu(gpu_library, [[0.4, 0.1, -0.3], [1.0, -0.2, 0.3]], dtype)
    scale = _on_gpu(gpu_library, [[0.5, 0.8, 0.3], [0.3, 1.0, 0.7]], dtype)
    d = ma.GaussianSparsemax(loc, scale)
    calls = []
    original = cuda_faces.face_counts
    monkeypatch.setattr(cuda_faces, "face_counts", lambda *a: calls.append(1) or original(*a))
    n = 2_000_000
    with device_guards(library):
        fused = fs_module.face_statistics(d, 7, n, chunk_size=700_000)
    assert calls == [1]
    assert fused.size_probs.value.device == loc.device
    monkeypatch.setattr(fs_module, "_fused", lambda d, table: False)
    reference = fs_module.face_statistics(d, 8, n)
    for a, b in ((fused.size_probs, reference.size_probs), (fused.marginals, reference.marginals)):
        value, se = to_numpy(a.value), to_numpy(a.stderr)
        combined = np.hypot(se, to_numpy(b.stderr))
        assert np.max(np.abs(value - to_numpy(b.value)) / combined) < 4.5
        # Negative control: the members swapped is a different law and fails the check.
        assert np.max(np.abs(value - to_numpy(b.value)[::-1]) / combined) > 4.5
    np.testing.assert_allclose(to_numpy(fused.size_probs.value).sum(-1), 1.0, rtol=1e-6)
