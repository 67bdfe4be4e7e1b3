"""JAX adapter: ``jax.custom_jvp`` rules for the projections, and pytree registration.

Imported lazily by :func:`mixedarray._backend.lookup_rule` the first time a JAX array reaches a
projection, so ``import mixedarray`` never imports JAX.  The forward maps are the
standard-API code of :mod:`mixedarray.projections` (sparsemax and 1.5-entmax by the sort-free
Newton threshold solver inside ``jax.lax.while_loop``); the derivatives are the closed-form
JVPs there, linear in the tangent, so JAX transposes them for reverse mode.  Everything works
under ``jit``, ``vmap``, ``grad``, ``jacfwd``/``jacrev`` and higher orders.

An eager (concrete) float32/float64 array on a CUDA GPU, with CuPy and Numba's CUDA target
installed, takes the Numba kernels of :mod:`mixedarray._native.cuda_threshold` instead, zero-copy
through DLPack (:func:`mixedarray._native.cuda_interop.through_cupy`): in the ``custom_jvp``
primal, and so also in the JVP rule whenever its primal is concrete (eager ``grad``, ``jvp``,
``jacfwd``).  A traced array (``jit``, ``vmap``, a primal staged by an outer ``jit``) takes the
Newton solver above; CPU and TPU arrays import neither CuPy nor Numba.

Every distribution class is registered as a pytree here (its array parameters are the
leaves), so distributions pass into and out of ``jit``, ``vmap``, ``grad`` and ``lax`` control
flow.  Registration happens when this module is imported: the first time a distribution is
built while JAX is imported, or a JAX array reaches a projection.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from mixedarray import projections
from mixedarray._backend import register_rule
from mixedarray._native import cuda_interop

__all__: list[str] = []


def _repeat(n: int, step: Any, state: Any) -> Any:
    return jax.lax.fori_loop(0, n, lambda _, s: step(s), state)


# Jitted once at module level: eager calls reuse the compiled loop instead of re-tracing the
# while/fori loops (whose bodies are fresh closures) on every call; inside an outer jit they
# are inlined.
_newton = jax.jit(
    lambda z, name: projections.threshold_newton(jnp, name, z, jax.lax.while_loop),
    static_argnums=1,
)
_bisect = jax.jit(
    lambda z, alpha, n_iter: projections.entmax_bisect_reference(jnp, z, alpha, n_iter, _repeat),
    static_argnums=2,
)


def _threshold(name: str, z: jax.Array) -> jax.Array:
    """``name`` ("sparsemax" or "entmax15") of ``z`` along its last axis.

    The Numba CUDA kernel for an eager JAX GPU array (through DLPack, on the caller's stream),
    otherwise the jitted Newton solver (any tracer, any other device).
    """
    if cuda_interop.jax_array_ok(z):
        from mixedarray._native import cuda_threshold

        return cuda_interop.through_cupy(functools.partial(cuda_threshold.project, name), z)
    return _newton(z, name)


@jax.custom_jvp
def _sparsemax(z: jax.Array) -> jax.Array:
    return _threshold("sparsemax", z)


@_sparsemax.defjvp
def _sparsemax_jvp(primals: tuple, tangents: tuple) -> tuple:
    z, dz = jnp.asarray(primals[0]), jnp.asarray(tangents[0])
    y = _sparsemax(z)  # the primal: the kernel where z is concrete on a GPU
    return y, projections.sparsemax_jvp(y, dz)


@jax.custom_jvp
def _entmax15(z: jax.Array) -> jax.Array:
    return _threshold("entmax15", z)


@_entmax15.defjvp
def _entmax15_jvp(primals: tuple, tangents: tuple) -> tuple:
    z, dz = jnp.asarray(primals[0]), jnp.asarray(tangents[0])
    y = _entmax15(z)  # the primal: the kernel where z is concrete on a GPU
    return y, projections.entmax15_jvp(y, dz)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _entmax(z: jax.Array, alpha: jax.Array, n_iter: int) -> jax.Array:
    return _bisect(z, alpha, n_iter)


@_entmax.defjvp
def _entmax_jvp(n_iter: int, primals: tuple, tangents: tuple) -> tuple:
    z, alpha, dz, dalpha = (jnp.asarray(a) for a in (*primals, *tangents))
    y = _entmax(z, alpha, n_iter)
    dy = projections.entmax_jvp(y, dz, alpha) + projections.entmax_alpha_jvp(y, alpha) * dalpha
    return y, dy


@register_rule("jax", "sparsemax")
def sparsemax(z: jax.Array, alpha: Any, n_iter: Any) -> jax.Array:
    return _sparsemax(z)


@register_rule("jax", "entmax15")
def entmax15(z: jax.Array, alpha: Any, n_iter: Any) -> jax.Array:
    return _entmax15(z)


@register_rule("jax", "entmax")
def entmax(z: jax.Array, alpha: Any, n_iter: int) -> jax.Array:
    if isinstance(alpha, float):
        alpha = jnp.full((*z.shape[:-1], 1), alpha, dtype=z.dtype)
    return _entmax(z, jnp.broadcast_to(alpha, (*z.shape[:-1], 1)), n_iter)


# ---------------------------------------------------------------------------------------------
# Pytrees: every distribution, its array parameters as leaves (named by attribute), static
# configuration, K and validate_args as auxiliary data.


def register_pytree(cls: type) -> None:
    """Register the distribution class ``cls`` (and nothing else) as a JAX pytree, once."""
    if cls in _PYTREES:
        return
    _PYTREES.add(cls)
    keys = tuple(jax.tree_util.GetAttrKey(name) for name in cls.parameter_names)

    def flatten_with_keys(d: Any) -> tuple:
        leaves, aux = d.tree_flatten()
        return tuple(zip(keys, leaves, strict=True)), aux

    jax.tree_util.register_pytree_with_keys(
        cls, flatten_with_keys, cls.tree_unflatten, flatten_func=lambda d: d.tree_flatten()
    )


_PYTREES: set[type] = set()


def _register_all() -> None:
    from mixedarray.distributions import Distribution

    pending = [Distribution]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls is not Distribution:
            register_pytree(cls)


_register_all()
