"""Projections side by side with the peers a user would pick instead, in one process.

    python bench/projections.py            # the full table (about a minute on 2 cores)
    python bench/projections.py --quick    # fewer repetitions
    python bench/projections.py --scale 0.1  # inputs N(0, 0.1²): wide supports, harder for
                                              # sort-free methods

Rows: mixedarray on torch tensors vs ``entmax.sparsemax``/``entmax15``/``entmax_bisect``;
mixedarray on JAX arrays under ``jax.jit`` vs ``optax.projections.projection_simplex``
(``jax.jit(jax.vmap(...))``); softmax of each framework as the floor.  Shapes (65536, 16),
(4096, 1000), (256, 65536), float32, forward and forward+backward (the backward of
``sum(w * y)`` with a fixed random ``w``), and a (1, 10) call.  Times are the median of
``--repeat`` runs after a warm-up; torch runs on 2 threads.  Ratios are ours / peer (< 1 is
faster).  Nothing here is asserted: the figures go into the issue notes.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("NUMBA_NUM_THREADS", "2")

import entmax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

import mixedarray as ma

SHAPES = [(65536, 16), (4096, 1000), (256, 65536)]


def median_ms(fn: Callable[[], object], repeat: int, sync: Callable[[object], object]) -> float:
    sync(fn())  # warm-up (compilation, caches)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def torch_rows(z: torch.Tensor, w: torch.Tensor) -> list[tuple[str, Callable, Callable]]:
    def fwd_bwd(fn: Callable) -> Callable:
        def run() -> torch.Tensor:
            x = z.detach().requires_grad_()
            (fn(x) * w).sum().backward()
            return x.grad

        return run

    pairs = [
        ("sparsemax", ma.sparsemax, entmax.sparsemax),
        ("entmax15", ma.entmax15, entmax.entmax15),
        (
            "entmax α=1.5 bisect",
            lambda x: ma.entmax(x, 1.5),
            lambda x: entmax.entmax_bisect(x, 1.5),
        ),
    ]
    rows = []
    for name, ours, peer in pairs:
        rows.append((f"torch {name} fwd", lambda f=ours: f(z), lambda f=peer: f(z)))
        rows.append((f"torch {name} fwd+bwd", fwd_bwd(ours), fwd_bwd(peer)))
    rows.append(("torch softmax fwd (floor)", lambda: torch.softmax(z, -1), None))
    return rows


def jax_rows(z: jax.Array, w: jax.Array) -> list[tuple[str, Callable, Callable]]:
    ours = jax.jit(ma.sparsemax)
    peer = jax.jit(jax.vmap(optax.projections.projection_simplex))
    ours_grad = jax.jit(jax.grad(lambda x: jnp.sum(w * ma.sparsemax(x))))
    peer_grad = jax.jit(
        jax.grad(lambda x: jnp.sum(w * jax.vmap(optax.projections.projection_simplex)(x)))
    )
    softmax = jax.jit(jax.nn.softmax)
    return [
        ("jax sparsemax fwd (jit)", lambda: ours(z), lambda: peer(z)),
        ("jax sparsemax fwd+bwd (jit)", lambda: ours_grad(z), lambda: peer_grad(z)),
        ("jax softmax fwd (floor)", lambda: softmax(z), None),
    ]


def small_call(repeat: int) -> list[str]:
    z = torch.randn(1, 10)
    lines = []
    for label, ours, peer in [
        ("torch (1, 10) sparsemax", lambda: ma.sparsemax(z), lambda: entmax.sparsemax(z)),
        ("torch (1, 10) entmax15", lambda: ma.entmax15(z), lambda: entmax.entmax15(z)),
    ]:
        per_call = []
        for fn in (ours, peer):
            fn()
            n = 2000
            best = min(
                (time.perf_counter(), [fn() for _ in range(n)], time.perf_counter())
                for _ in range(max(3, repeat))
            )
            per_call.append(1e6 * (best[2] - best[0]) / n)
        lines.append(
            f"| {label} | {per_call[0]:.1f} µs | {per_call[1]:.1f} µs | "
            f"{per_call[0] / per_call[1]:.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions instead of 7")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per entry (median)")
    parser.add_argument("--scale", type=float, default=1.0, help="standard deviation of inputs")
    parser.add_argument("--shapes", default=None, help="e.g. 65536x16,4096x1000")
    args = parser.parse_args()
    repeat = 3 if args.quick else args.repeat
    shapes = SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]

    torch.set_num_threads(2)
    print(
        f"# mixedarray projections benchmark\n\n{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; torch {torch.__version__} (2 threads), jax {jax.__version__}, "
        f"entmax {getattr(entmax, '__version__', '?')}, optax {optax.__version__}; float32, "
        f"inputs N(0, {args.scale}²), median of {repeat}\n"
    )
    print("| work | shape | ours (ms) | peer (ms) | ours/peer |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for shape in shapes:
        data = (args.scale * rng.standard_normal(shape)).astype(np.float32)
        weights = rng.standard_normal(shape).astype(np.float32)
        rows = torch_rows(torch.from_numpy(data), torch.from_numpy(weights))
        rows += jax_rows(jnp.asarray(data), jnp.asarray(weights))
        for label, ours, peer in rows:
            sync = jax.block_until_ready if label.startswith("jax") else (lambda x: x)
            ours_ms = median_ms(ours, repeat, sync)
            if peer is None:
                print(f"| {label} | {shape[0]}×{shape[1]} | {ours_ms:.2f} | | |")
                continue
            peer_ms = median_ms(peer, repeat, sync)
            print(
                f"| {label} | {shape[0]}×{shape[1]} | {ours_ms:.2f} | {peer_ms:.2f} | "
                f"{ours_ms / peer_ms:.3f} |"
            )
    print("\n| small call | ours | peer | ours/peer |\n|---|---|---|---|")
    print("\n".join(small_call(repeat)))


if __name__ == "__main__":
    main()
