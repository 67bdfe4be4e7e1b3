"""JAX adapter: ``jax.custom_jvp`` rules for the projections, and pytree registration.

Imported lazily by :func:`mixedarray._backend.lookup_rule` the first time a JAX array reaches a
projection, so ``import mixedarray`` never imports JAX.  The forward maps are the
standard-API code of :mod:`mixedarray.projections` (sparsemax and 1.5-entmax by the sort-free
Newton threshold solver inside ``jax.lax.while_loop``); the derivatives are the closed-form
JVPs there, linear in the tangent, so JAX transposes them for reverse mode.  Everything works
under ``jit``, ``vmap``, ``grad``, ``jacfwd``/``jacrev`` and higher orders.

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


@jax.custom_jvp
def _sparsemax(z: jax.Array) -> jax.Array:
    return _newton(z, "sparsemax")


@_sparsemax.defjvp
def _sparsemax_jvp(primals: tuple, tangents: tuple) -> tuple:
    z, dz = jnp.asarray(primals[0]), jnp.asarray(tangents[0])
    y = _sparsemax(z)
    return y, projections.sparsemax_jvp(y, dz)


@jax.custom_jvp
def _entmax15(z: jax.Array) -> jax.Array:
    return _newton(z, "entmax15")


@_entmax15.defjvp
def _entmax15_jvp(primals: tuple, tangents: tuple) -> tuple:
    z, dz = jnp.asarray(primals[0]), jnp.asarray(tangents[0])
    y = _entmax15(z)
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
