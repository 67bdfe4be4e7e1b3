"""``python -m mixedarray estimate``: Monte Carlo estimates from the command line.

Builds a GaussianSparsemax or MixedDirichlet from parameters given inline or in a file, on the
chosen backend and device, and estimates its direct-sum entropy, its KL divergence and
cross-entropy to a reference (the max-entropy mixed distribution, or a second parameter file),
and its face statistics, each with a standard error.  Everything runs on the device; the
results are read once at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

DISTRIBUTIONS = {
    "gaussian-sparsemax": ("loc", "scale"),
    "mixed-dirichlet": ("face_logits", "concentration"),
}
QUANTITIES = ("entropy", "kl", "cross-entropy", "faces")
BACKENDS = ("numpy", "torch", "jax", "cupy")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``estimate`` sub-command's options."""
    parser.add_argument(
        "distribution",
        choices=sorted(DISTRIBUTIONS),
        help="gaussian-sparsemax (parameters loc, scale) or mixed-dirichlet (face_logits, "
        "concentration)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUES",
        help="a parameter inline, comma-separated (one value is repeated K times), e.g. "
        "--param loc=0.4,0.1,-0.3 --param scale=0.5; repeat for each parameter",
    )
    parser.add_argument(
        "--params",
        type=Path,
        metavar="FILE",
        help="a .json or .npz file of the parameters (arrays of shape batch + (K,)); inline "
        "--param values override it",
    )
    parser.add_argument(
        "-K",
        type=int,
        help="number of vertices, needed when every parameter is a single value",
    )
    parser.add_argument(
        "--what",
        nargs="+",
        choices=(*QUANTITIES, "all"),
        default=["all"],
        help="what to estimate: entropy (H⊕, nats), kl and cross-entropy (to the reference "
        "q, nats), faces (P(|F| = k) and P(i in F)); default all",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        metavar="FILE",
        help="parameters of q, of the same family, for kl and cross-entropy (default: the "
        "max-entropy mixed distribution at --bits)",
    )
    parser.add_argument(
        "--bits", type=float, default=0.0, help="precision N of the max-entropy reference"
    )
    parser.add_argument(
        "--table",
        action="store_true",
        help="also estimate P(F = f) for every face (K <= 20)",
    )
    parser.add_argument(
        "-n", "--samples", type=float, default=1e6, help="Monte Carlo samples (e.g. 1e9)"
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        help="samples per chunk of every estimate; memory is bounded by one chunk (default: "
        "about 4M array elements, or the fused GPU kernels' own launch size)",
    )
    parser.add_argument("--backend", choices=BACKENDS, default="numpy", help="array library")
    parser.add_argument(
        "--device",
        default=None,
        help="device: torch 'cuda:0', JAX 'gpu' or 'gpu:0', CuPy device number; default the "
        "library's default",
    )
    parser.add_argument(
        "--dtype", choices=("float32", "float64"), default="float64", help="parameter dtype"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the library's generator")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _read_file(path: Path) -> dict[str, Any]:
    import numpy as np

    if path.suffix == ".json":
        return {k: np.asarray(v, dtype=float) for k, v in json.loads(path.read_text()).items()}
    if path.suffix == ".npz":
        with np.load(path) as data:
            return {k: np.asarray(data[k], dtype=float) for k in data.files}
    raise ValueError(f"--params/--reference: expected a .json or .npz file, got {path}")


def _parameters(
    names: tuple[str, ...], file: Path | None, inline: list[str], K: int | None
) -> dict[str, Any]:
    import numpy as np

    values = _read_file(file) if file is not None else {}
    for item in inline:
        name, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--param expects NAME=VALUES, got {item!r}")
        try:
            values[name.strip()] = np.asarray([float(v) for v in text.split(",")])
        except ValueError:
            raise ValueError(f"--param {name}: values must be numbers, got {text!r}") from None
    unknown = sorted(set(values) - set(names))
    missing = [n for n in names if n not in values]
    if unknown or missing:
        raise ValueError(
            f"parameters must be exactly {', '.join(names)}; "
            + (f"unknown: {', '.join(unknown)}; " if unknown else "")
            + (f"missing: {', '.join(missing)}" if missing else "")
        )
    sizes = {int(v.shape[-1]) for v in values.values() if v.ndim and v.shape[-1] != 1}
    if K is not None:
        sizes.add(K)
    if len(sizes) != 1:
        raise ValueError(
            "the number of vertices is ambiguous: give -K, or parameters with K entries on "
            f"their last axis (got sizes {sorted(sizes) or 'none'})"
        )
    (size,) = sizes
    shapes = [v.shape[:-1] if v.ndim else () for v in values.values()]
    batch = np.broadcast_shapes(*shapes)
    return {
        n: np.broadcast_to(values[n].reshape(values[n].shape or (1,)), (*batch, size))
        for n in names
    }


def _to_backend(values: dict[str, Any], backend: str, device: str | None, dtype: str) -> dict:
    import numpy as np

    values = {k: np.array(v, dtype=dtype) for k, v in values.items()}  # writable copies
    if backend == "numpy":
        if device not in (None, "cpu"):
            raise ValueError(f"--device: NumPy arrays live on the CPU, got {device!r}")
        return values
    if backend == "torch":
        import torch

        return {k: torch.as_tensor(v, device=device or "cpu") for k, v in values.items()}
    if backend == "jax":
        import jax

        if dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        platform, _, index = (device or jax.default_backend()).partition(":")
        target = jax.devices(platform)[int(index or 0)]
        return {k: jax.device_put(v, target) for k, v in values.items()}
    import cupy

    with cupy.cuda.Device(int(device or 0)):
        return {k: cupy.asarray(v) for k, v in values.items()}


def _build(distribution: str, arrays: dict[str, Any]) -> Any:
    import mixedarray as ma

    cls = {"gaussian-sparsemax": ma.GaussianSparsemax, "mixed-dirichlet": ma.MixedDirichlet}
    return cls[distribution](**arrays)


def _listed(x: Any) -> Any:
    """``x`` on the host as (nested) Python floats: the run's one read of results."""
    import numpy as np

    from mixedarray._backend import library_name

    if library_name(x) == "torch":
        x = x.detach().cpu()
    elif library_name(x) == "cupy":
        x = x.get()
    return np.asarray(x).tolist()


def _host(estimate: Any) -> dict[str, Any]:
    return {"value": _listed(estimate.value), "stderr": _listed(estimate.stderr)}


def _exact_or_none(fn: Any) -> Any:
    try:
        return fn()
    except NotImplementedError:
        return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Estimate what ``args`` asks for; returns the JSON-able results (also printed)."""
    import mixedarray as ma
    from mixedarray.face_frequencies import face_statistics

    samples = args.samples
    if not (samples >= 2 and float(samples).is_integer()):
        raise ValueError(f"--samples must be a whole number >= 2, got {samples}")
    num_samples = int(samples)
    names = DISTRIBUTIONS[args.distribution]
    arrays = _to_backend(
        _parameters(names, args.params, args.param, args.K), args.backend, args.device, args.dtype
    )
    p = _build(args.distribution, arrays)
    wanted = set(QUANTITIES if "all" in args.what else args.what)
    if args.reference is not None:
        reference = _parameters(names, args.reference, [], p.num_vertices)
        q = _build(args.distribution, _to_backend(reference, args.backend, args.device, args.dtype))
        q_name = f"{args.distribution} from {args.reference}"
    else:
        q = ma.MaxEntMixed(p.num_vertices, args.bits, like=p._like, batch_shape=p.batch_shape)
        q_name = f"max-entropy mixed distribution, {args.bits:g} bits"
    seeds = iter(range(args.seed, args.seed + 4))
    options = {
        "num_samples": num_samples,
        "return_stderr": True,
        "chunk_size": args.chunk_size,
        "progress": args.progress,
    }
    results: dict[str, Any] = {
        "distribution": args.distribution,
        "K": p.num_vertices,
        "batch_shape": list(p.batch_shape),
        "backend": args.backend,
        "device": str(p.device),
        "samples": num_samples,
        "seed": args.seed,
    }
    start = time.perf_counter()
    if "entropy" in wanted:
        results["entropy"] = _host(ma.entropy(p, method="mc", rng=next(seeds), **options))
        exact = _exact_or_none(lambda: ma.entropy(p, method="exact"))
        if exact is not None:
            results["entropy"]["exact"] = _listed(exact)
    for key, function in (("kl", ma.kl_divergence), ("cross-entropy", ma.cross_entropy)):
        if key in wanted:
            results[key] = _host(function(p, q, method="mc", rng=next(seeds), **options))
            results[key]["reference"] = q_name
            exact = _exact_or_none(lambda f=function: f(p, q, method="exact"))
            if exact is not None:
                results[key]["exact"] = _listed(exact)
    if "faces" in wanted:
        stats = face_statistics(
            p,
            next(seeds),
            num_samples,
            table=args.table,
            chunk_size=args.chunk_size,
            progress=args.progress,
        )
        results["size_probs"] = _host(stats.size_probs)
        results["marginals"] = _host(stats.marginals)
        if stats.face_probs is not None:
            results["face_probs"] = _host(stats.face_probs)
    seconds = time.perf_counter() - start  # the results above are on the host: all synced
    results["seconds"] = seconds
    results["samples_per_second"] = num_samples * len(wanted) / seconds if seconds else math.inf
    return results


def _format(results: dict[str, Any]) -> str:
    lines = [
        f"{results['distribution']}, K = {results['K']}, batch {results['batch_shape']}, "
        f"{results['backend']} on {results['device']}, {results['samples']:,} samples, "
        f"seed {results['seed']}"
    ]
    for key in ("entropy", "kl", "cross-entropy", "size_probs", "marginals", "face_probs"):
        if key in results:
            entry = results[key]
            text = f"{key}: {entry['value']} ± {entry['stderr']} (1 s.e.)"
            if "exact" in entry:
                text += f"; exact {entry['exact']}"
            if "reference" in entry:
                text += f"; q = {entry['reference']}"
            lines.append(text)
    lines.append(
        f"{results['seconds']:.3f} s, {results['samples_per_second']:.3g} samples/s "
        "(all quantities)"
    )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Run and print (text or JSON)."""
    results = run(args)
    print(json.dumps(results) if args.json else _format(results))
    return 0
