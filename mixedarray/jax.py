"""JAX adapter: ``jax.custom_jvp`` rules for the projections.

Imported lazily by :func:`mixedarray._backend.lookup_rule` the first time a JAX array reaches a
projection, so ``import mixedarray`` never imports JAX.  The forward maps are the
standard-API code of :mod:`mixedarray.projections` (sparsemax and 1.5-entmax by the sort-free
Newton threshold solver inside ``jax.lax.while_loop``); the derivatives are the closed-form
JVPs there, linear in the tangent, so JAX transposes them for reverse mode.  Everything works
under ``jit``, ``vmap``, ``grad``, ``jacfwd``/``jacrev`` and higher orders.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from mixedarray import projections
from mixedarray._backend import register_rule

__all__: list[str] = []


@jax.custom_jvp
def _sparsemax(z: jax.Array) -> jax.Array:
    return projections.threshold_newton(jnp, "sparsemax", z, jax.lax.while_loop)


@_sparsemax.defjvp
def _sparsemax_jvp(primals: tuple, tangents: tuple) -> tuple:
    z, dz = jnp.asarray(primals[0]), jnp.asarray(tangents[0])
    y = _sparsemax(z)
    return y, projections.sparsemax_jvp(y, dz)


@jax.custom_jvp
def _entmax15(z: jax.Array) -> jax.Array:
    return projections.threshold_newton(jnp, "entmax15", z, jax.lax.while_loop)


@_entmax15.defjvp
def _entmax15_jvp(primals: tuple, tangents: tuple) -> tuple:
    z, dz = jnp.asarray(primals[0]), jnp.asarray(tangents[0])
    y = _entmax15(z)
    return y, projections.entmax15_jvp(y, dz)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _entmax(z: jax.Array, alpha: jax.Array, n_iter: int) -> jax.Array:
    return projections.reference("entmax", jnp, z, alpha, n_iter)


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
