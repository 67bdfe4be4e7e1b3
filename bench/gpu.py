"""mixedarray on one CUDA GPU, side by side with the peers, in one run; the table goes to
``bench/RESULTS.md``.

    python bench/gpu.py                  # the full table (a few minutes on an H100)
    python bench/gpu.py --quick          # fewer repetitions and samples
    python bench/gpu.py --billion        # also real 10^9-sample face-statistics and entropy runs
    python bench/gpu.py --parts projections,faces   # a subset: projections, faces, entropy
    python bench/gpu.py --output FILE    # write the table somewhere else
    python bench/gpu.py --cpu-dry-run    # every code path on CPU arrays at tiny sizes (JAX CPU
                                         # arrays, reference paths, for the JAX rows); CI runs
                                         # this to check the script; it never writes a file

Without a CUDA device the script says so and exits 0 (nothing measured, nothing written).
JAX is optional: without it, or when it sees no CUDA GPU, the JAX rows are skipped with the
reason printed (and noted in the table), and everything else runs.

Rows (float32, inputs N(0, 1)):

* projections — sparsemax 8192×1000, 65536×16, 512×65536 and 1.5-entmax 8192×1000: ours on
  torch CUDA tensors (``ma.sparsemax(t)``), on CuPy arrays and on eager JAX GPU arrays (the
  same Numba kernels, through DLPack and CuPy), the peer ``entmax.sparsemax`` /
  ``entmax.entmax15``, ``torch.softmax`` (the limit a projection can hope for) and
  ``torch.clone`` (the copy bound); for comparison, ``jax.jit`` of ours on the JAX array, which
  takes the reference path (the Newton solver, compiled by XLA) by design.  Device time is the
  median over ``--repeat`` runs, each after a 256 MiB write that flushes the L2 cache, timed
  with CUDA events (or ``triton.testing.do_bench`` when Triton is installed; ``--timer``); wall
  time is the median of synchronised calls seen from the host, and host time how long the call
  takes to return (the Python and launch overhead).  GB/s = (bytes read + written) / device
  time, against the ≈ 3000 GB/s an H100 copies.  Accuracy: max |ours − reference| with the
  standard-API reference (``mixedarray.projections.reference``) run in float64 on the same
  device (for JAX, which computes in float64 only under ``jax_enable_x64``, in NumPy float64
  on the host).
* face statistics of Gaussian-Sparsemax, K = 10 and 100 — ours
  (``mixedarray.face_statistics``) on CuPy, torch CUDA and eager JAX GPU arrays vs the peer
  pipeline (``torch.randn`` + ``entmax.sparsemax`` + a histogram of face sizes, chunked), in
  samples/s; accuracy: the largest gap between our face-size frequencies and the peer's, in
  combined standard errors.
* the Gaussian-Sparsemax entropy estimate (``ma.entropy(d, method="mc")``, K = 10): ours on
  torch CUDA, on CuPy and on eager JAX GPU arrays (the fused kernel of
  ``mixedarray._native.cuda_entropy``: draw, project and score ``log p`` in one launch) against
  our torch-CUDA reference path (the same call under ``mixedarray._native.reference_only()``:
  ``expectation`` of ``−log_prob``, the array-API code), in samples/s, with each estimate's gap
  to the reference path's in combined standard errors.
* ``--billion``: face statistics and the entropy estimate from 10^9 samples (K = 10) on each
  backend (JAX included), with their time and peak memory.

JAX rows ("ours · JAX GPU"): JAX has no CUDA events API, so their *device time is wall time
with a sync*: the wall-clock time from a sync (a small JAX computation on the device, blocked
on, then ``cudaDeviceSynchronize`` through CuPy, on whose stream the DLPack path launches),
through the call, to ``block_until_ready()`` on its result and ``cudaDeviceSynchronize`` again,
the median of ``--repeat`` runs, each after an L2 flush that writes a 256 MiB ``jnp`` array and
blocks on it.  It includes the host's dispatch time, which CUDA events leave out, so it reads
high for short calls; ``--timer triton`` does not apply to it.  The calls are eager: under
``jit`` the arrays are traced and take the reference path by design (the jitted projection rows
show what that costs).

Peak memory is the growth over the call of ``torch.cuda.max_memory_allocated`` (torch), of
CuPy's default memory pool (CuPy), or, for JAX, of XLA's
``device.memory_stats()["peak_bytes_in_use"]`` above the bytes in use before the call, plus the
CuPy pool's growth (the DLPack path allocates its kernels' outputs and scratch there).  JAX
cannot reset its high-water mark: where a call stays under an earlier one, the figure is that
earlier mark (an upper bound, shown "≤ …"); where the device keeps no statistics (CPU), "–".
In a real run the script sets ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` in ``os.environ`` before
JAX is first imported (unless the environment sets it already), so that JAX allocates on
demand instead of taking 75 % of the GPU's memory at its first use and starving CuPy and torch
in the same process.

Nothing here is asserted: a target missed is reported in the table's last section, and an
implementation that fails is listed with its error (the exit status is then 1).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

DEFAULT_OUTPUT = HERE / "RESULTS.md"
NOMINAL_COPY_GBPS = 3000.0  # H100 HBM3 copy rate, roughly
L2_FLUSH_BYTES = 256 * 2**20
MIB = 2**20
DRY_FLUSH_BYTES = MIB  # the JAX flush in a dry run: the same code, a token size

PROJECTIONS = [
    ("sparsemax", (8192, 1000)),
    ("sparsemax", (65536, 16)),
    ("sparsemax", (512, 65536)),
    ("entmax15", (8192, 1000)),
]
DRY_SHAPES = {(8192, 1000): (8, 10), (65536, 16): (16, 4), (512, 65536): (2, 64)}
FACE_KS = (10, 100)
ENTROPY_KS = (10,)
BILLION = 10**9

# Figures quoted in the issue (H100, PyTorch 2.11, float32) - measured elsewhere, not here.
ISSUE_FIGURES = [
    ("sparsemax 8192×1000", "entmax.sparsemax 0.65 ms; softmax 0.028 ms (L2-warm)"),
    ("sparsemax 65536×16", "entmax.sparsemax 0.54 ms; softmax 0.014 ms"),
    ("sparsemax 512×65536", "entmax.sparsemax 3.97 ms; softmax 0.19 ms; copy bound ≈ 0.09 ms"),
    ("entmax15 8192×1000", "entmax.entmax15 1.01 ms"),
    ("face statistics K=10", "torch.randn + entmax.sparsemax + histogram: 1.5e8 samples/s"),
    ("face statistics K=100", "the same: 6.1e7 samples/s"),
]
TARGETS = (
    "every projection row ≥ 3× faster than the peer; sparsemax within 3× of softmax; face "
    "statistics ≥ 10× the peer's samples/s; the entropy estimate ≥ 3× our torch-CUDA reference "
    "path; projections within 1e-5 of the reference; Monte Carlo within 4 combined standard "
    "errors"
)


# ---------------------------------------------------------------------------------------------
# Backends: where arrays live, how to time on them, how much memory a call takes


class Backend:
    """One array library on one device; the CPU ones stand in for the GPU ones in a dry run."""

    label = "?"
    library = "?"
    on_gpu = False
    wall_clock_device_time = False  # no CUDA events: device time is wall time between syncs
    peak_bound = False  # the last peak_bytes was an upper bound, not the call's own peak

    def put(self, host: np.ndarray) -> Any:
        raise NotImplementedError

    def rng(self, seed: int) -> Any:
        raise NotImplementedError

    def read(self, x: Any) -> np.ndarray:
        raise NotImplementedError

    def sync(self) -> None:
        pass

    def flush_l2(self) -> None:
        pass

    def device_ms(self, fn: Callable[[], Any]) -> float:
        """Time of one call on the device (the host clock on a CPU)."""
        start = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - start)

    def peak_bytes(self, fn: Callable[[], Any]) -> int | None:
        return None


class TorchBackend(Backend):
    library = "torch"

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.on_gpu = self.device.type == "cuda"
        self.label = "torch CUDA" if self.on_gpu else "torch CPU"
        self._flush = None
        if self.on_gpu:
            self._flush = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device=self.device)

    def put(self, host: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(host)).to(self.device)

    def rng(self, seed: int) -> Any:
        return self.torch.Generator(device=self.device).manual_seed(seed)

    def read(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    def sync(self) -> None:
        if self.on_gpu:
            self.torch.cuda.synchronize(self.device)

    def flush_l2(self) -> None:
        if self._flush is not None:
            self._flush.zero_()

    def device_ms(self, fn: Callable[[], Any]) -> float:
        if not self.on_gpu:
            return super().device_ms(fn)
        start = self.torch.cuda.Event(enable_timing=True)
        end = self.torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)

    def peak_bytes(self, fn: Callable[[], Any]) -> int | None:
        if not self.on_gpu:
            return None
        cuda = self.torch.cuda
        self.sync()
        base = cuda.memory_allocated(self.device)
        cuda.reset_peak_memory_stats(self.device)
        result = fn()
        self.sync()
        peak = cuda.max_memory_allocated(self.device) - base
        del result
        return peak


class CuPyBackend(Backend):
    library = "cupy"
    label = "CuPy"
    on_gpu = True

    def __init__(self) -> None:
        import cupy

        self.cupy = cupy
        self._flush = cupy.empty(L2_FLUSH_BYTES // 4, dtype=cupy.int32)

    def put(self, host: np.ndarray) -> Any:
        return self.cupy.asarray(host)

    def rng(self, seed: int) -> Any:
        return self.cupy.random.default_rng(seed)

    def read(self, x: Any) -> np.ndarray:
        return self.cupy.asnumpy(x)

    def sync(self) -> None:
        self.cupy.cuda.get_current_stream().synchronize()

    def flush_l2(self) -> None:
        self._flush.fill(0)

    def device_ms(self, fn: Callable[[], Any]) -> float:
        start, end = self.cupy.cuda.Event(), self.cupy.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return self.cupy.cuda.get_elapsed_time(start, end)

    def peak_bytes(self, fn: Callable[[], Any]) -> int | None:
        pool = self.cupy.get_default_memory_pool()
        self.sync()
        pool.free_all_blocks()
        base = pool.total_bytes()  # the pool keeps what it allocated until freed: its growth
        result = fn()  # over the call is the call's peak (rounded up to the pool's blocks)
        self.sync()
        peak = pool.total_bytes() - base
        del result
        return peak


class NumPyStandIn(Backend):
    """NumPy arrays in the CuPy rows of a dry run (the same array-API code path)."""

    library = "numpy"
    label = "NumPy (stands in for CuPy)"

    def put(self, host: np.ndarray) -> Any:
        return np.array(host)

    def rng(self, seed: int) -> Any:
        return np.random.default_rng(seed)

    def read(self, x: Any) -> np.ndarray:
        return np.asarray(x)


class JaxBackend(Backend):
    """Eager JAX arrays on one device: a CUDA GPU, or the CPU in a dry run (reference paths).

    JAX has no CUDA events API, so :meth:`device_ms` is wall time with a sync: from a sync,
    through the call, to ``block_until_ready()`` on its result and a device barrier.  A sync
    blocks on a small JAX computation on the device (ordered after the work JAX dispatched
    there), then on the barrier: on a GPU with CuPy, ``cudaDeviceSynchronize`` (the DLPack path
    launches its Numba kernels on CuPy's stream, outside JAX's); nothing otherwise.
    """

    library = "jax"
    wall_clock_device_time = True

    def __init__(self, device: Any) -> None:
        import jax
        import jax.numpy as jnp

        self.jax, self.device = jax, device
        self.on_gpu = device.platform in ("gpu", "cuda")
        self.label = "JAX GPU" if self.on_gpu else "JAX CPU"
        self._tick = jax.device_put(np.int32(0), device)
        self._zero = jax.jit(jnp.zeros_like, donate_argnums=0)  # rewrites its input's memory
        self.flush_bytes = L2_FLUSH_BYTES if self.on_gpu else DRY_FLUSH_BYTES
        self._flush = jax.device_put(np.zeros(self.flush_bytes // 4, dtype=np.int32), device)
        self._cupy = None
        if self.on_gpu and importlib.util.find_spec("cupy") is not None:
            import cupy

            self._cupy = cupy
            ordinal = getattr(device, "local_hardware_id", None)  # the CUDA ordinal
            self._ordinal = int(device.id if ordinal is None else ordinal)

    def put(self, host: np.ndarray) -> Any:
        return self.jax.device_put(np.ascontiguousarray(host), self.device)

    def rng(self, seed: int) -> Any:
        return self.jax.device_put(self.jax.random.key(seed), self.device)

    def read(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def _barrier(self) -> None:
        """Wait for every stream of the GPU (CuPy's, where the DLPack path runs, included)."""
        if self._cupy is not None:
            with self._cupy.cuda.Device(self._ordinal):
                self._cupy.cuda.runtime.deviceSynchronize()

    def sync(self) -> None:
        (self._tick + 1).block_until_ready()
        self._barrier()

    def flush_l2(self) -> None:
        self._flush = self._zero(self._flush)  # writes its 256 MiB (on a GPU) in place
        self._flush.block_until_ready()

    def device_ms(self, fn: Callable[[], Any]) -> float:
        self.sync()
        start = time.perf_counter()
        self.jax.block_until_ready(fn())  # JAX's work on the result; the barrier: the rest
        self._barrier()
        return 1e3 * (time.perf_counter() - start)

    def peak_bytes(self, fn: Callable[[], Any]) -> int | None:
        """XLA's peak bytes in use over those in use before the call, plus CuPy's pool growth.

        XLA's high-water mark cannot be reset: where the call leaves it where it was, the
        figure is that earlier mark over the bytes in use before the call, an upper bound
        (``peak_bound``).  None where the device keeps no statistics (the CPU).
        """
        self.peak_bound = False
        stats = self.device.memory_stats()
        if not stats or "peak_bytes_in_use" not in stats or "bytes_in_use" not in stats:
            return None
        # the DLPack path allocates its kernels' outputs and scratch from CuPy's pool
        pool = self._cupy.get_default_memory_pool() if self._cupy is not None else None
        self.sync()
        if pool is not None:
            pool.free_all_blocks()
        pool_base = pool.total_bytes() if pool is not None else 0
        before = self.device.memory_stats()
        result = fn()
        self.jax.block_until_ready(result)
        self.sync()
        after = self.device.memory_stats()
        self.peak_bound = after["peak_bytes_in_use"] <= before["peak_bytes_in_use"]
        peak = after["peak_bytes_in_use"] - before["bytes_in_use"]
        if pool is not None:
            peak += pool.total_bytes() - pool_base
        del result
        return peak


# ---------------------------------------------------------------------------------------------
# Timing


@dataclass
class Timing:
    device_ms: float  # median, L2 flushed before each run
    wall_ms: float  # median of synchronised calls, from the host
    host_ms: float  # median time for the call to return (Python + launch overhead)
    peak_bytes: int | None
    peak_bound: bool = False  # peak_bytes is an upper bound (JAX: an earlier high-water mark)


class Timer:
    def __init__(self, kind: str, repeat: int, warmup: int) -> None:
        self.kind, self.repeat, self.warmup = kind, repeat, warmup

    def _device_median(self, backend: Backend, fn: Callable[[], Any]) -> float:
        if self.kind == "triton" and backend.on_gpu and not backend.wall_clock_device_time:
            from triton.testing import do_bench  # flushes L2 itself, CUDA events inside

            try:
                return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
            except TypeError:  # older Triton: no return_mode
                return float(do_bench(fn, warmup=25, rep=100, quantiles=[0.5]))
        times = []
        for _ in range(self.repeat):
            backend.flush_l2()
            times.append(backend.device_ms(fn))
        return statistics.median(times)

    def measure(self, backend: Backend, fn: Callable[[], Any]) -> Timing:
        for _ in range(self.warmup):
            fn()
        backend.sync()
        device = self._device_median(backend, fn)
        walls, hosts = [], []
        for _ in range(self.repeat):
            backend.flush_l2()
            backend.sync()
            start = time.perf_counter()
            fn()
            returned = time.perf_counter()
            backend.sync()
            end = time.perf_counter()
            walls.append(1e3 * (end - start))
            hosts.append(1e3 * (returned - start))
        peak = backend.peak_bytes(fn)
        return Timing(
            device, statistics.median(walls), statistics.median(hosts), peak, backend.peak_bound
        )

    def once(self, backend: Backend, fn: Callable[[], Any]) -> tuple[Any, Timing]:
        """One long call (Monte Carlo): its result, device time, wall time and peak memory."""
        box: list[Any] = []

        def timed() -> None:
            backend.sync()
            start = time.perf_counter()
            device = backend.device_ms(lambda: box.append(fn()))
            backend.sync()
            box.append((device, 1e3 * (time.perf_counter() - start)))

        peak = backend.peak_bytes(timed)
        if peak is None and not box:
            timed()
        result, (device, wall) = box
        return result, Timing(device, wall, math.nan, peak, peak is not None and backend.peak_bound)


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class Setup:
    dry: bool
    torch: TorchBackend | None  # ours on torch, the peer, softmax, clone
    alt: Backend | None  # ours on CuPy (NumPy in a dry run)
    jax: JaxBackend | None  # ours on eager JAX GPU arrays (JAX CPU arrays in a dry run)
    jax_note: str  # which JAX device, or why the JAX rows are skipped
    peer: Any  # the entmax module, or None
    timer: Timer
    face_samples: dict[int, int]
    entropy_samples: int
    billion: int
    errors: list[str]

    def ours(self) -> list[Backend]:
        return [b for b in (self.alt, self.torch, self.jax) if b is not None]

    def shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        return DRY_SHAPES.get(shape, shape) if self.dry else shape


def _attempt(setup: Setup, what: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, or None with the error recorded (re-raised in a dry run: CI must see it)."""
    try:
        return fn()
    except Exception as error:
        if setup.dry:
            raise
        setup.errors.append(f"{what}: {type(error).__name__}: {error}")
        traceback.print_exc()
        return None


def _max_error(backend: Backend, name: str, z: Any, y: Any) -> float:
    """max |y − reference(z)| with the standard-API reference in float64 on the same device.

    JAX computes in float64 only under ``jax_enable_x64``: its reference runs in NumPy float64
    on the host instead.
    """
    from mixedarray._backend import array_namespace
    from mixedarray.projections import reference

    if backend.library == "jax":
        z, y = backend.read(z), backend.read(y)
    xp = array_namespace(z)
    exact = reference(name, xp, xp.astype(z, xp.float64))
    gap = xp.max(xp.abs(xp.astype(y, xp.float64) - exact))
    return float(backend.read(gap))


@dataclass
class Candidate:
    label: str
    backend: Backend
    fn: Callable[[], Any]
    z: Any  # the input, for the accuracy check
    checked: bool  # compare with the reference projection
    reference_path: bool = False  # ours, but on the reference path by design: no targets


def _projection_candidates(setup: Setup, name: str, host: np.ndarray) -> list[Candidate]:
    import mixedarray as ma

    ours = {"sparsemax": ma.sparsemax, "entmax15": ma.entmax15}[name]
    tb = setup.torch
    t = tb.put(host)
    found = [Candidate(f"ours · {tb.label}", tb, lambda: ours(t), t, True)]
    if setup.alt is not None:
        a = setup.alt.put(host)
        found.append(Candidate(f"ours · {setup.alt.label}", setup.alt, lambda: ours(a), a, True))
    jb = setup.jax
    if jb is not None:
        j = jb.put(host)
        jitted = jb.jax.jit(ours)  # traced: the reference path (Newton solver in XLA)
        found.append(Candidate(f"ours · {jb.label}", jb, lambda: ours(j), j, True))
        found.append(
            Candidate(
                f"ours · {jb.label} (jit, reference path)", jb, lambda: jitted(j), j, True, True
            )
        )
    if setup.peer is not None:
        peer = getattr(setup.peer, name)
        found.append(Candidate(f"entmax.{name} (peer)", tb, lambda: peer(t, dim=-1), t, True))
    softmax = tb.torch.softmax
    found.append(Candidate("torch.softmax (limit)", tb, lambda: softmax(t, dim=-1), t, False))
    found.append(Candidate("torch.clone (copy bound)", tb, lambda: t.clone(), t, False))
    return found


def projection_rows(setup: Setup) -> list[dict]:
    torch = setup.torch.torch
    rows = []
    for name, nominal in PROJECTIONS:
        shape = setup.shape(nominal)
        host = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        bytes_moved = 2 * host.nbytes  # read z, write y
        measured = {}
        on_reference_path = set()
        for c in _projection_candidates(setup, name, host):
            if c.reference_path:
                on_reference_path.add(c.label)

            def run(c: Candidate = c, name: str = name) -> dict:
                with torch.no_grad():
                    timing = setup.timer.measure(c.backend, c.fn)
                    error = _max_error(c.backend, name, c.z, c.fn()) if c.checked else None
                return {"timing": timing, "error": error}

            result = _attempt(setup, f"{name} {nominal} {c.label}", run)
            if result is not None:
                measured[c.label] = result
        peer = measured.get(f"entmax.{name} (peer)")
        peer_ms = peer["timing"].device_ms if peer else None
        softmax = measured.get("torch.softmax (limit)")
        softmax_ms = softmax["timing"].device_ms if softmax else None
        for label, result in measured.items():
            timing = result["timing"]
            ours = label.startswith("ours")
            rows.append(
                {
                    "op": f"{name} {nominal[0]}×{nominal[1]}",
                    "shape": shape,
                    "implementation": label,
                    "timing": timing,
                    "gbps": bytes_moved / (timing.device_ms * 1e-3) / 1e9,
                    "error": result["error"],
                    "speedup": peer_ms / timing.device_ms if ours and peer_ms else None,
                    "over_softmax": timing.device_ms / softmax_ms if ours and softmax_ms else None,
                    "ours": ours,
                    "reference_path": label in on_reference_path,
                    "name": name,
                }
            )
    return rows


def _gaussian_sparsemax(backend: Backend, k: int) -> Any:
    import mixedarray as ma

    loc = np.random.default_rng(k).normal(0.0, 1.0, size=k).astype(np.float32)
    scale = np.ones(k, dtype=np.float32)
    return ma.GaussianSparsemax(backend.put(loc), backend.put(scale))


def _peer_face_sizes(setup: Setup, k: int, n: int, seed: int) -> Any:
    """The peer pipeline: torch.randn + entmax.sparsemax + a histogram of face sizes, chunked."""
    backend = setup.torch
    torch = backend.torch
    loc = torch.from_numpy(np.random.default_rng(k).normal(0.0, 1.0, size=k).astype(np.float32))
    loc = loc.to(backend.device)
    generator = backend.rng(seed)
    chunk = max(1, (1 << 22) // k)  # the same ~4M elements per chunk as ours by default
    counts = torch.zeros(k + 1, dtype=torch.int64, device=backend.device)
    done = 0
    with torch.no_grad():
        while done < n:
            m = min(chunk, n - done)
            z = torch.randn(m, k, generator=generator, device=backend.device) + loc
            sizes = (setup.peer.sparsemax(z, dim=-1) > 0).sum(dim=-1)
            counts += torch.bincount(sizes, minlength=k + 1)
            done += m
    return counts


def _size_frequencies(counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    p = counts / n
    return p, np.sqrt(np.clip(p * (1 - p), 0, None) / (n - 1))


def _max_z(p: np.ndarray, se: np.ndarray, q: np.ndarray, se_q: np.ndarray) -> float:
    combined = np.sqrt(se**2 + se_q**2)
    gap = np.abs(p - q)
    if np.any((combined == 0) & (gap > 0)):
        return math.inf
    ok = combined > 0
    return float(np.max(gap[ok] / combined[ok])) if np.any(ok) else 0.0


def face_rows(setup: Setup) -> list[dict]:
    from mixedarray.face_frequencies import face_statistics

    rows = []
    for k in FACE_KS:
        n = setup.face_samples[k]
        reference = None
        if setup.peer is not None and setup.torch is not None:

            def peer(k=k, n=n) -> tuple:
                _peer_face_sizes(setup, k, min(n, 4 * ((1 << 22) // k)), 1)  # warm-up
                # Its own seed: the same seed would replay our torch draws exactly.
                return setup.timer.once(setup.torch, lambda: _peer_face_sizes(setup, k, n, 7))

            result = _attempt(setup, f"face statistics K={k} peer", peer)
            if result is not None:
                counts, timing = result
                counts = setup.torch.read(counts).astype(np.float64)[1:]
                reference = _size_frequencies(counts, n)
                rows.append(
                    {
                        "k": k,
                        "implementation": "torch.randn + entmax.sparsemax + bincount (peer)",
                        "n": n,
                        "timing": timing,
                        "z": None,
                        "peer": True,
                    }
                )
        for backend in setup.ours():

            def ours(backend=backend, k=k, n=n) -> tuple:
                d = _gaussian_sparsemax(backend, k)
                face_statistics(d, backend.rng(0), min(n, 4 * ((1 << 22) // k)))  # warm-up
                stats, timing = setup.timer.once(
                    backend, lambda: face_statistics(d, backend.rng(2), n)
                )
                p = backend.read(stats.size_probs.value).astype(np.float64)
                se = backend.read(stats.size_probs.stderr).astype(np.float64)
                return p, se, timing

            result = _attempt(setup, f"face statistics K={k} ours on {backend.label}", ours)
            if result is None:
                continue
            p, se, timing = result
            z = None if reference is None else _max_z(p, se, *reference)
            rows.append(
                {
                    "k": k,
                    "implementation": f"ours · {backend.label}",
                    "n": n,
                    "timing": timing,
                    "z": z,
                    "peer": False,
                }
            )
    for row in rows:
        row["rate"] = row["n"] / (row["timing"].device_ms * 1e-3)
    for row in rows:
        peers = [r for r in rows if r["peer"] and r["k"] == row["k"]]
        row["vs_peer"] = row["rate"] / peers[0]["rate"] if peers and not row["peer"] else None
    return rows


@dataclass
class EntropyCandidate:
    label: str
    backend: Backend
    reference_path: bool  # run under mixedarray._native.reference_only()


def _entropy_candidates(setup: Setup) -> list[EntropyCandidate]:
    """Ours on torch (fused kernel, then the array-API reference path), on CuPy and on JAX."""
    found = []
    if setup.torch is not None:
        found.append(EntropyCandidate(f"ours · {setup.torch.label}", setup.torch, False))
        found.append(
            EntropyCandidate(f"ours · {setup.torch.label}, reference path", setup.torch, True)
        )
    if setup.alt is not None:
        found.append(EntropyCandidate(f"ours · {setup.alt.label}", setup.alt, False))
    if setup.jax is not None:
        found.append(EntropyCandidate(f"ours · {setup.jax.label}", setup.jax, False))
    return found


def entropy_rows(setup: Setup) -> list[dict]:
    """``ma.entropy(d, method="mc")`` per candidate; the torch reference path is the baseline.

    Each row says which path ran (``information._fused_entropy``: the fused kernel where it
    applies; on CPU arrays in a dry run, and under ``reference_only()``, the array-API
    reference, ``expectation`` of ``−log_prob``).
    """
    import contextlib

    import mixedarray as ma
    from mixedarray import information
    from mixedarray._native import reference_only

    rows = []
    n = setup.entropy_samples
    for k in ENTROPY_KS:
        found = {}
        for c in _entropy_candidates(setup):

            def run(c: EntropyCandidate = c, k: int = k) -> tuple:
                backend = c.backend
                d = _gaussian_sparsemax(backend, k)
                with reference_only() if c.reference_path else contextlib.nullcontext():
                    fused = information._fused_entropy(d)
                    # warm-up (compiles the kernel), then one timed call
                    ma.entropy(d, method="mc", rng=backend.rng(0), num_samples=max(2, n // 8))
                    estimate, timing = setup.timer.once(
                        backend,
                        lambda: ma.entropy(
                            d, method="mc", rng=backend.rng(2), num_samples=n, return_stderr=True
                        ),
                    )
                value = float(backend.read(estimate.value))
                stderr = float(backend.read(estimate.stderr))
                return value, stderr, timing, fused

            result = _attempt(setup, f"entropy K={k} {c.label}", run)
            if result is not None:
                found[c.label] = (c, result)
        baseline = next((r for c, r in found.values() if c.reference_path), None)
        for label, (c, (value, stderr, timing, fused)) in found.items():
            row = {
                "k": k,
                "implementation": label,
                "path": "fused kernel" if fused else "array-API reference",
                "n": n,
                "value": value,
                "stderr": stderr,
                "timing": timing,
                "rate": n / (timing.device_ms * 1e-3),
                "reference": c.reference_path,
                "vs_reference": None,
                "z": None,
            }
            if baseline is not None and not c.reference_path:
                ref_value, ref_se, ref_timing = baseline[0], baseline[1], baseline[2]
                combined = math.hypot(stderr, ref_se)
                row["z"] = abs(value - ref_value) / combined if combined > 0 else math.inf
                row["vs_reference"] = ref_timing.device_ms / timing.device_ms
            rows.append(row)
    return rows


def billion_rows(setup: Setup) -> list[dict]:
    import mixedarray as ma

    def faces(backend: Backend, d: Any, rng: Any, n: int) -> str:
        p = backend.read(ma.face_statistics(d, rng, n).size_probs.value)
        return "P(size = 1, 2, 3) = " + ", ".join(f"{v:.5f}" for v in p[:3])

    def entropy(backend: Backend, d: Any, rng: Any, n: int) -> str:
        e = ma.entropy(d, method="mc", rng=rng, num_samples=n, return_stderr=True)
        return f"H = {float(backend.read(e.value)):.6f} ± {float(backend.read(e.stderr)):.1e}"

    rows = []
    n = setup.billion
    for backend in setup.ours():
        for quantity, estimate in (("face statistics", faces), ("entropy", entropy)):

            def run(backend=backend, estimate=estimate) -> tuple:
                d = _gaussian_sparsemax(backend, 10)
                estimate(backend, d, backend.rng(0), min(n, 1 << 20))  # warm-up
                return setup.timer.once(backend, lambda: estimate(backend, d, backend.rng(1), n))

            result = _attempt(setup, f"10^9 samples, {quantity} on {backend.label}", run)
            if result is not None:
                text, timing = result
                rows.append(
                    {
                        "quantity": quantity,
                        "implementation": f"ours · {backend.label}",
                        "n": n,
                        "timing": timing,
                        "rate": n / (timing.wall_ms * 1e-3),
                        "result": text,
                    }
                )
    return rows


# ---------------------------------------------------------------------------------------------
# The report


def _versions() -> list[str]:
    names = [
        ("mixedarray", ("mixedarray",)),
        ("torch", ("torch",)),
        ("cupy", ("cupy", "cupy-cuda12x", "cupy-cuda13x", "cupy-cuda11x")),
        ("jax", ("jax",)),
        ("jaxlib", ("jaxlib",)),
        ("entmax", ("entmax",)),
        ("numba", ("numba",)),
        ("numba-cuda", ("numba-cuda",)),
        ("triton", ("triton", "pytorch-triton")),
        ("numpy", ("numpy",)),
        ("array-api-compat", ("array-api-compat",)),
    ]
    found = []
    for label, distributions in names:
        for dist in distributions:
            try:
                found.append(f"{label} {importlib.metadata.version(dist)}")
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        else:
            found.append(f"{label} —")
    return found


def _device_lines(setup: Setup) -> list[str]:
    lines = []
    if setup.dry:
        lines.append(
            f"CPU dry run: {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores (tiny sizes; no figure here means anything)"
        )
    if setup.torch is not None and setup.torch.on_gpu:
        torch = setup.torch.torch
        props = torch.cuda.get_device_properties(setup.torch.device)
        lines.append(
            f"{props.name}: {props.multi_processor_count} SMs, "
            f"{props.total_memory / 2**30:.1f} GiB; torch CUDA {torch.version.cuda}"
        )
    lines.append(setup.jax_note)
    if isinstance(setup.alt, CuPyBackend):
        runtime = setup.alt.cupy.cuda.runtime
        lines.append(
            f"CuPy: CUDA runtime {runtime.runtimeGetVersion()}, driver API "
            f"{runtime.driverGetVersion()}"
        )
    smi = shutil.which("nvidia-smi")
    if smi and not setup.dry:
        try:
            out = subprocess.run(
                [
                    smi,
                    "--query-gpu=name,driver_version,memory.total,clocks.max.memory",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
            lines.append(f"nvidia-smi: {out.splitlines()[0] if out else '(no output)'}")
        except (OSError, subprocess.SubprocessError):
            pass
    return lines


def _f(value: float | None, spec: str = ".3f", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:{spec}}{suffix}"


def _mib(value: int | None) -> str:
    return "–" if value is None else f"{value / MIB:.1f}"


def _peak(t: Timing) -> str:
    """Peak MiB; "≤ …" where it is an upper bound (JAX, under an earlier high-water mark)."""
    return ("≤ " if t.peak_bound and t.peak_bytes is not None else "") + _mib(t.peak_bytes)


def report(setup: Setup, args: argparse.Namespace, parts: dict[str, list[dict]]) -> str:
    out = ["# mixedarray on the GPU — `bench/gpu.py`", ""]
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out.append(f"Measured {when} by `python bench/gpu.py {' '.join(sys.argv[1:])}`.")
    out.append("")
    out += [f"* {line}" for line in _device_lines(setup)]
    out.append(f"* python {platform.python_version()}; " + ", ".join(_versions()))
    timer = setup.timer.kind
    out.append(
        f"* float32, inputs N(0, 1); device time: "
        f"{'triton.testing.do_bench (median)' if timer == 'triton' else 'CUDA events'}"
        f", median of {setup.timer.repeat} runs after {setup.timer.warmup} warm-up calls, L2 "
        f"flushed before each (a {L2_FLUSH_BYTES // MIB} MiB write); wall = a synchronised call "
        "seen from the host; host = until the call returns (Python + launch overhead)"
    )
    if setup.jax is not None:
        out.append(
            "* JAX rows: device time is **wall time with a sync** (JAX has no CUDA events "
            "API): a sync, the call, `block_until_ready()` on its result and a device sync, "
            f"median of {setup.timer.repeat} runs, L2 flushed before each by writing a "
            f"{setup.jax.flush_bytes / MIB:g} MiB jnp array and blocking; it includes the host's "
            "dispatch time. Eager calls (under `jit` JAX arrays take the reference path by "
            "design: the `(jit, reference path)` rows). Peak = growth of XLA's "
            "`peak_bytes_in_use` over the bytes in use before the call, plus CuPy's pool growth "
            '("≤": JAX cannot reset its high-water mark and the call stayed under an earlier '
            'one; "–": no statistics). Accuracy against a NumPy float64 reference on the host'
        )
    out.append(f"* targets: {TARGETS}")
    out.append("")

    if "projections" in parts:
        out += [
            "## Projections",
            "",
            "| op | implementation | device ms | wall ms | host ms | GB/s | of "
            f"{NOMINAL_COPY_GBPS:.0f} GB/s | peak MiB | max err (vs float64 reference) | "
            "peer ÷ this | this ÷ softmax |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in parts["projections"]:
            t = row["timing"]
            op = row["op"] + (
                f" (dry run: {row['shape'][0]}×{row['shape'][1]})" if setup.dry else ""
            )
            out.append(
                f"| {op} | {row['implementation']} | {_f(t.device_ms, '.4f')} | "
                f"{_f(t.wall_ms, '.4f')} | {_f(t.host_ms, '.4f')} | {_f(row['gbps'], '.0f')} | "
                f"{_f(100 * row['gbps'] / NOMINAL_COPY_GBPS, '.1f', ' %')} | "
                f"{_peak(t)} | {_f(row['error'], '.2e')} | "
                f"{_f(row['speedup'], '.2f', '×')} | {_f(row['over_softmax'], '.2f', '×')} |"
            )
        out.append("")

    if "faces" in parts:
        out += [
            "## Face statistics of Gaussian-Sparsemax (face sizes and vertex marginals)",
            "",
            "| K | implementation | samples | device s | wall s | samples/s | × peer | "
            "peak MiB | max gap to the peer (combined s.e.) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in parts["faces"]:
            t = row["timing"]
            out.append(
                f"| face statistics K={row['k']} | {row['implementation']} | {row['n']:.3g} | "
                f"{_f(t.device_ms / 1e3, '.4f')} | {_f(t.wall_ms / 1e3, '.4f')} | "
                f"{row['rate']:.3g} | {_f(row['vs_peer'], '.2f', '×')} | {_peak(t)} | "
                f"{_f(row['z'], '.2f')} |"
            )
        out.append("")

    if "entropy" in parts:
        out += [
            "## Entropy estimate of Gaussian-Sparsemax (Monte Carlo of −log p(Y))",
            "",
            "| K | implementation | path | samples | device s | wall s | samples/s | "
            "reference path ÷ this | H⊕ ± s.e. (nats) | gap to the reference path "
            "(combined s.e.) | peak MiB |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in parts["entropy"]:
            t = row["timing"]
            out.append(
                f"| entropy K={row['k']} | {row['implementation']} | {row['path']} | "
                f"{row['n']:.3g} | "
                f"{_f(t.device_ms / 1e3, '.4f')} | {_f(t.wall_ms / 1e3, '.4f')} | "
                f"{row['rate']:.3g} | {_f(row.get('vs_reference'), '.2f', '×')} | "
                f"{row['value']:.5f} ± {row['stderr']:.1e} | {_f(row.get('z'), '.2f')} | "
                f"{_peak(t)} |"
            )
        out.append("")

    if "billion" in parts:
        label = "10^9" if not setup.dry else f"10^9 (dry run: {setup.billion} samples)"
        out += [
            f"## A real {label}-sample run: Gaussian-Sparsemax K = 10",
            "",
            "| quantity | implementation | samples | wall s | device s | samples/s | peak MiB | "
            "result |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in parts["billion"]:
            t = row["timing"]
            out.append(
                f"| {row['quantity']} | {row['implementation']} | {row['n']:.3g} | "
                f"{t.wall_ms / 1e3:.2f} | {t.device_ms / 1e3:.2f} | {row['rate']:.3g} | "
                f"{_peak(t)} | {row['result']} |"
            )
        out.append("")

    out += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in _verdicts(setup, parts)]
    out.append("")
    out += [
        "## Figures quoted in the issue (H100, PyTorch 2.11; not measured by this run)",
        "",
        "| row | figure |",
        "|---|---|",
    ]
    out += [f"| {a} | {b} |" for a, b in ISSUE_FIGURES]
    out.append("")
    if setup.errors:
        out += ["## Errors", ""]
        out += [f"* {line}" for line in setup.errors]
        out.append("")
    return "\n".join(out)


def _verdicts(setup: Setup, parts: dict[str, list[dict]]) -> list[tuple[str, str, str]]:
    def met(ok: bool | None) -> str:
        return "–" if ok is None else ("yes" if ok else "**no**")

    lines = []
    for row in parts.get("projections", []):
        if not row["ours"]:
            continue
        if row.get("reference_path"):
            continue  # ours on the reference path by design (jit): for comparison only
        where = f"{row['op']}, {row['implementation']}"
        if row["speedup"] is not None:
            lines.append(
                (f"{where}: ≥ 3× the peer", f"{row['speedup']:.2f}×", met(row["speedup"] >= 3))
            )
        if row["name"] == "sparsemax" and row["over_softmax"] is not None:
            lines.append(
                (
                    f"{where}: within 3× of softmax",
                    f"{row['over_softmax']:.2f}×",
                    met(row["over_softmax"] <= 3),
                )
            )
        if row["error"] is not None:
            lines.append(
                (
                    f"{where}: within 1e-5 of the reference",
                    f"{row['error']:.1e}",
                    met(row["error"] <= 1e-5),
                )
            )
    for row in parts.get("faces", []):
        if row["peer"]:
            continue
        where = f"face statistics K={row['k']}, {row['implementation']}"
        if row["vs_peer"] is not None:
            lines.append(
                (
                    f"{where}: ≥ 10× the peer's samples/s",
                    f"{row['vs_peer']:.2f}×",
                    met(row["vs_peer"] >= 10),
                )
            )
        if row["z"] is not None:
            lines.append(
                (f"{where}: within 4 s.e. of the peer", f"{row['z']:.2f}", met(row["z"] <= 4))
            )
    for row in parts.get("entropy", []):
        if row.get("vs_reference") is None:
            continue
        where = f"entropy K={row['k']}, {row['implementation']}"
        lines.append(
            (
                f"{where}: ≥ 3× our torch-CUDA reference path",
                f"{row['vs_reference']:.2f}×",
                met(row["vs_reference"] >= 3),
            )
        )
        lines.append(
            (
                f"{where}: within 4 s.e. of the torch-CUDA reference path",
                f"{row['z']:.2f}",
                met(row["z"] <= 4),
            )
        )
    if "billion" in parts:
        for row in parts["billion"]:
            lines.append(
                (
                    f"a real {row['n']:.3g}-sample run, {row['quantity']}, {row['implementation']}",
                    f"{row['timing'].wall_ms / 1e3:.1f} s, peak {_peak(row['timing'])} MiB",
                    met(row["n"] >= BILLION),
                )
            )
    else:
        lines.append(("a real 10^9-sample run", "not run (pass --billion)", "–"))
    return lines


# ---------------------------------------------------------------------------------------------
# Entry point


def _cuda_status() -> tuple[bool, bool, str]:
    """(torch has a CUDA device, CuPy has one, a sentence saying which)."""
    torch_ok = cupy_ok = False
    notes = []
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch_ok = torch.cuda.is_available()
        notes.append(f"torch {torch.__version__}: {'CUDA' if torch_ok else 'no CUDA device'}")
    else:
        notes.append("torch not installed")
    if importlib.util.find_spec("cupy") is not None:
        try:
            import cupy

            cupy_ok = cupy.cuda.runtime.getDeviceCount() > 0
            notes.append(f"cupy {cupy.__version__}: {'CUDA' if cupy_ok else 'no CUDA device'}")
        except Exception as error:  # no driver, no device
            notes.append(f"cupy: no CUDA device ({type(error).__name__})")
    else:
        notes.append("cupy not installed")
    return torch_ok, cupy_ok, "; ".join(notes)


def _keep_jax_from_preallocating() -> None:
    """Before JAX is first imported in a real run: no preallocation of GPU memory.

    By default JAX's GPU client takes 75 % of the device's memory at its first use, and CuPy
    and torch in this process would then run out; ``XLA_PYTHON_CLIENT_PREALLOCATE=false``
    makes it allocate on demand.  Read once, when JAX's backend starts: so it is set before
    anything imports JAX (a value the environment sets already is kept).
    """
    if "jax" in sys.modules:
        print(
            "bench/gpu.py: JAX was imported before the benchmark could set "
            "XLA_PYTHON_CLIENT_PREALLOCATE=false; it may hold most of the GPU's memory",
            file=sys.stderr,
        )
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def _jax_backend(dry: bool) -> tuple[JaxBackend | None, str]:
    """The JAX backend (JAX CPU arrays in a dry run), or None and why the JAX rows are skipped."""
    if importlib.util.find_spec("jax") is None:
        return None, "JAX rows skipped: JAX is not installed"
    import jax

    if dry:  # JAX CPU arrays: the reference paths, at tiny sizes (errors surface: CI sees them)
        backend = JaxBackend(jax.devices("cpu")[0])
        return backend, f"JAX {jax.__version__} on the CPU (dry run: the reference paths)"
    try:
        device = jax.devices("cuda")[0]
    except Exception as error:  # no CUDA plugin, no device
        return None, f"JAX rows skipped: JAX {jax.__version__} sees no CUDA GPU ({error})"
    try:
        backend = JaxBackend(device)
    except Exception as error:
        return None, f"JAX rows skipped: JAX on {device}: {type(error).__name__}: {error}"
    from mixedarray._native import cuda_interop

    route = (
        "eager arrays take the Numba kernels through DLPack and CuPy"
        if cuda_interop.dlpack_available()
        else "**no DLPack route** (CuPy or Numba's CUDA target missing): the reference paths"
    )
    preallocate = os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE")
    return backend, (
        f"JAX {jax.__version__} on {device.device_kind} ({device}): {route}; "
        f"XLA_PYTHON_CLIENT_PREALLOCATE={preallocate}"
    )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and samples")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per row (median)")
    parser.add_argument(
        "--timer",
        choices=("auto", "events", "triton"),
        default="auto",
        help="device timing: CUDA events, triton.testing.do_bench, or auto (Triton when installed)",
    )
    parser.add_argument(
        "--parts",
        default="projections,faces,entropy",
        help="comma list of projections, faces, entropy",
    )
    parser.add_argument(
        "--billion",
        action="store_true",
        help="also estimate face statistics and the entropy from 10^9 samples on each backend",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"where the table goes (default {DEFAULT_OUTPUT})",
    )
    parser.add_argument(
        "--cpu-dry-run",
        action="store_true",
        help="run every code path on CPU arrays at tiny sizes; write nothing",
    )
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"projections", "faces", "entropy"}
    if unknown:
        parser.error(f"--parts: unknown {sorted(unknown)}")
    args.parts = parts
    return args


def _setup(args: argparse.Namespace, torch_ok: bool, cupy_ok: bool) -> Setup:
    dry = args.cpu_dry_run
    jax_backend, jax_note = _jax_backend(dry)
    if jax_backend is None:
        print(f"bench/gpu.py: {jax_note}", file=sys.stderr)
    peer = None
    if importlib.util.find_spec("entmax") is not None:
        import entmax as peer
    torch_backend = None
    if dry or torch_ok:
        torch_backend = TorchBackend("cpu" if dry else "cuda")
    alt: Backend | None = None
    if dry:
        alt = NumPyStandIn()
    elif cupy_ok:
        alt = CuPyBackend()
    if dry:
        timer = Timer("events", repeat=2, warmup=1)
        face_samples = dict.fromkeys(FACE_KS, 3000)
        entropy_samples, billion = 400, 2000
    else:
        kind = args.timer
        if kind == "auto":
            kind = "triton" if importlib.util.find_spec("triton") and torch_ok else "events"
        repeat = args.repeat or (10 if args.quick else 50)
        timer = Timer(kind, repeat=repeat, warmup=3)
        scale = 4 if args.quick else 1
        face_samples = {10: (1 << 27) // scale, 100: (1 << 24) // scale}
        entropy_samples, billion = (1 << 22) // scale, BILLION
    return Setup(
        dry=dry,
        torch=torch_backend,
        alt=alt,
        jax=jax_backend,
        jax_note=jax_note,
        peer=peer,
        timer=timer,
        face_samples=face_samples,
        entropy_samples=entropy_samples,
        billion=billion,
        errors=[],
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.cpu_dry_run:
        if importlib.util.find_spec("torch") is None:
            print("bench/gpu.py --cpu-dry-run needs torch (CPU build is enough); nothing run")
            return 0
        torch_ok = cupy_ok = False
    else:
        _keep_jax_from_preallocating()  # before anything imports JAX
        torch_ok, cupy_ok, status = _cuda_status()
        if not (torch_ok or cupy_ok):
            print(f"bench/gpu.py: no CUDA device ({status}): nothing measured, nothing written.")
            return 0
    setup = _setup(args, torch_ok, cupy_ok)
    if setup.torch is None:
        print(
            "bench/gpu.py: torch has no CUDA device here; only the CuPy rows can run, and "
            "the peers, softmax and the copy bound need torch: nothing measured."
        )
        return 0
    parts: dict[str, list[dict]] = {}
    steps = [("projections", projection_rows), ("faces", face_rows), ("entropy", entropy_rows)]
    for name, fn in steps:
        if name in args.parts:
            print(f"… {name}", file=sys.stderr, flush=True)
            parts[name] = fn(setup)
    if args.billion or setup.dry:
        print("… 10^9 samples", file=sys.stderr, flush=True)
        parts["billion"] = billion_rows(setup)
    text = report(setup, args, parts)
    print(text)
    if setup.dry:
        print("(dry run on CPU: nothing written)")
        return 0
    args.output.write_text(text + "\n")
    print(f"written to {args.output}", file=sys.stderr)
    return 1 if setup.errors else 0


if __name__ == "__main__":
    sys.exit(main())
