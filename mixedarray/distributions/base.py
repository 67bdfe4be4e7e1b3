r"""The base class of every distribution on the simplex.

Events live on the last axis: a distribution with ``K`` vertices has ``event_shape == (K,)``
and draws points ``y`` with ``y ≥ 0`` and ``Σ_k y_k = 1``.  ``log_prob`` is the log density
with respect to the direct-sum measure :math:`\mu_\oplus` (Lebesgue measure in free
coordinates on each face, counting measure on vertices; paper-notes §2), so
``log p(y) = log P(F = supp y) + log p(y | F)``.

Subclasses declare ``parameter_names`` (their array parameters, all broadcast to the full batch
shape), ``parameter_event_ndims`` (how many trailing axes of each parameter are not batch
axes) and ``static_names`` (configuration such as ``K`` or ``bits``), and implement ``_sample``
(and ``_rsample`` when a pathwise gradient exists), ``_log_prob`` and ``_face_log_prob``; the
public methods here check shapes and, under validation, values.

Framework citizenship comes from these declarations alone, through the adapters:

* JAX: every distribution is a pytree (parameters are leaves; static fields, ``K`` and
  ``validate_args`` as requested are auxiliary data), registered by :mod:`mixedarray.jax` the
  first time a distribution is built while JAX is imported — ``import mixedarray`` never
  imports JAX.
* PyTorch: a distribution built from torch tensors is an instance of a subclass that is also a
  ``torch.distributions.Distribution`` (made by :mod:`mixedarray.torch`), so it works where
  torch code expects one.
"""

from __future__ import annotations

import math
import operator
import sys
from typing import Any, ClassVar

from mixedarray import _backend

__all__ = ["Distribution", "cached_property"]

Array = Any


class cached_property:
    """``functools.cached_property`` without its lock, so ``torch.compile`` traces it.

    On Python < 3.12 ``functools.cached_property.__get__`` enters an ``RLock``, which Dynamo
    cannot trace (a graph break in every distribution built inside a compiled function).
    Like it, this is a non-data descriptor: the value is stored in the instance's ``__dict__``
    on first access and found there afterwards.
    """

    def __init__(self, function: Any) -> None:
        self.function = function
        self.name = function.__name__
        self.__doc__ = function.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = self.function(instance)
        setattr(instance, self.name, value)
        return value


def _shape(shape: Any, name: str) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        # operator.index: a float or a string is an error, not silently truncated or parsed.
        shape = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of ints, got {shape!r}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"{name} must have non-negative sizes, got {shape}")
    return shape


def _any_torch(*groups: Any) -> bool:
    # isinstance, not the type's module name: torch.compile traces this (no graph break).
    torch = sys.modules.get("torch")
    tensor = getattr(torch, "Tensor", None)
    if tensor is None:
        return False
    return any(isinstance(a, tensor) for group in groups for a in group)


class Distribution:
    """A distribution on the probability simplex over the last axis.

    Attributes
    ----------
    batch_shape : tuple of int
        Shape of the batch of independent distributions.
    event_shape : tuple of int
        ``(K,)``.
    validate_args : bool
        Whether values are checked (parameters at construction, points in ``log_prob``).
    """

    parameter_names: ClassVar[tuple[str, ...]] = ()
    parameter_event_ndims: ClassVar[tuple[int, ...]] = ()
    static_names: ClassVar[tuple[str, ...]] = ()
    has_rsample: ClassVar[bool] = False
    # Whether the face is drawn as a discrete variable, apart from the continuous noise, so that
    # rsample gives it no pathwise gradient (a score-function term is needed: gradients.py).
    has_discrete_face: ClassVar[bool] = False

    @property
    def _log_prob_width(self) -> int:
        """Array elements ``log_prob`` works on per point and batch member (sizes MC chunks)."""
        return self.num_vertices

    def __new__(cls, *args: Any, **kwargs: Any) -> Distribution:
        # Built from torch tensors: the subclass that is also a torch Distribution.
        if _any_torch(args, kwargs.values()):
            from mixedarray import torch as adapter

            cls = adapter.torch_class(cls)
        return super().__new__(cls)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "mixedarray.jax" in sys.modules:
            sys.modules["mixedarray.jax"].register_pytree(cls)
        if "mixedarray.torch" in sys.modules:
            sys.modules["mixedarray.torch"].torch_class(cls)  # its torch twin, made now

    def __init__(
        self,
        *,
        xp: Any,
        like: Array,
        batch_shape: tuple[int, ...],
        num_vertices: int,
        validate_args: bool | None,
    ) -> None:
        self._xp = xp
        self._like = like
        self._batch_shape = tuple(batch_shape)
        self._num_vertices = int(num_vertices)
        # The request as given (None, True or False) is what the pytree view carries, so a
        # distribution rebuilt from tracers has the same structure as one built eagerly.
        self._validate_request = None if validate_args is None else bool(validate_args)
        if validate_args is None:
            parameters = [getattr(self, name) for name in self.parameter_names]
            validate_args = _backend.values_are_checkable(like, *parameters)
        self.validate_args = bool(validate_args)
        if "jax" in sys.modules:
            _backend.load_adapter("jax")  # registers the pytrees

    # -- state rebuilt from parameters (pytree unflattening, expand) ----------------------------

    @cached_property
    def _like(self) -> Array:
        return getattr(self, self.parameter_names[0])

    @cached_property
    def _xp(self) -> Any:
        return _backend.array_namespace(self._like)

    @cached_property
    def _batch_shape(self) -> tuple[int, ...]:
        shape = tuple(self._like.shape)
        return shape[: len(shape) - self.parameter_event_ndims[0]]

    @cached_property
    def validate_args(self) -> bool:
        """Whether values are checked; ``None`` at construction resolves here, from the
        parameters (see :func:`mixedarray._backend.values_are_checkable`)."""
        if self._validate_request is not None:
            return self._validate_request
        parameters = [getattr(self, name) for name in self.parameter_names]
        return _backend.values_are_checkable(*parameters)

    def tree_flatten(self) -> tuple[tuple[Array, ...], tuple[Any, ...]]:
        """``(parameters, (static values, K, validate_args as requested))``: the pytree view.

        The auxiliary data holds ``validate_args`` as it was given (``None``, ``True`` or
        ``False``), not its resolution: ``None`` resolves to ``True`` for concrete CPU arrays
        and to ``False`` for tracers, and the two must not differ in tree structure (``jit``
        outputs, ``lax.scan`` carries).
        """
        parameters = tuple(getattr(self, name) for name in self.parameter_names)
        statics = tuple(getattr(self, name) for name in self.static_names)
        return parameters, (statics, self._num_vertices, self._validate_request)

    @classmethod
    def tree_unflatten(cls, aux: tuple[Any, ...], parameters: Any) -> Distribution:
        """Rebuild from :meth:`tree_flatten`'s output without re-running ``__init__``.

        The parameters may be anything (tracers, batched arrays, JAX's placeholder objects):
        shapes and namespaces are derived from them lazily, on first use.
        """
        statics, num_vertices, validate_args = aux
        self = object.__new__(cls)
        self.__dict__.update(zip(cls.parameter_names, parameters, strict=True))
        self.__dict__.update(zip(cls.static_names, statics, strict=True))
        self._num_vertices = num_vertices
        self._validate_request = validate_args  # resolved lazily by ``validate_args``
        return self

    def __getstate__(self) -> dict[str, Any]:
        # The namespace (a module) is not picklable; it is derived again on first use.
        state = dict(self.__dict__)
        state.pop("_xp", None)
        return state

    def expand(self, batch_shape: Any, _instance: Any = None) -> Distribution:
        """The same distribution broadcast to ``batch_shape`` (views, no copies).

        As ``torch.distributions.Distribution.expand``: axes of size 1 and new leading axes
        may grow; the parameters are broadcast, not copied.
        """
        batch_shape = _shape(batch_shape, "batch_shape")
        try:
            grown = _backend.broadcast_shapes(self.batch_shape, batch_shape)
        except ValueError:
            grown = None
        if grown != batch_shape:
            raise ValueError(
                f"batch_shape {batch_shape} cannot be reached by broadcasting the current "
                f"batch_shape {self.batch_shape}"
            )
        xp = self._xp
        parameters, aux = self.tree_flatten()
        expanded = []
        for value, event_ndim in zip(parameters, self.parameter_event_ndims, strict=True):
            event = tuple(value.shape)[len(value.shape) - event_ndim :]
            expanded.append(xp.broadcast_to(value, (*batch_shape, *event)))
        return type(self).tree_unflatten(aux, expanded)

    def _checks_values(self, *arrays: Array) -> bool:
        """Whether value checks run now: ``validate_args``, and neither ``arrays`` nor the
        parameters are abstract (traced values cannot be read, even when checks are forced)."""
        if not self.validate_args:
            return False
        parameters = [getattr(self, name) for name in self.parameter_names]
        return not _backend.is_traced(*arrays, *parameters)

    # -- shapes ---------------------------------------------------------------------------------

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self._batch_shape

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self._num_vertices,)

    @property
    def num_vertices(self) -> int:
        """K, the number of vertices of the simplex."""
        return self._num_vertices

    @property
    def dtype(self) -> Any:
        return self._like.dtype

    @property
    def device(self) -> Any:
        return _backend.device(self._like)

    def __repr__(self) -> str:
        shown = ", ".join(
            [f"{n}={getattr(self, n)!r}" for n in self.static_names]
            + [f"batch_shape={self.batch_shape}", f"event_shape={self.event_shape}"]
        )
        return f"{type(self).__name__}({shown})"

    # -- public API -----------------------------------------------------------------------------

    def sample(self, rng: Any, sample_shape: Any = ()) -> Array:
        """Draw points without gradient: shape ``sample_shape + batch_shape + (K,)``.

        ``rng`` is the caller's framework's own generator (NumPy/CuPy ``Generator``,
        ``torch.Generator``, a JAX key) or an int seed; see :mod:`mixedarray.random`.
        """
        shape = _shape(sample_shape, "sample_shape")
        return _backend.stop_gradient(self._sample(rng, shape))

    def rsample(self, rng: Any, sample_shape: Any = ()) -> Array:
        """Draw points with a pathwise gradient w.r.t. the parameters (torch, JAX).

        On NumPy and CuPy this is :meth:`sample`.  Raises ``NotImplementedError`` for
        distributions without a reparameterisation.
        """
        if not self.has_rsample:
            raise NotImplementedError(
                f"{type(self).__name__} has no pathwise (reparameterised) sampler; use sample() "
                "and a score-function estimator"
            )
        return self._rsample(rng, _shape(sample_shape, "sample_shape"))

    def log_prob(self, y: Array) -> Array:
        """Log density of ``y`` w.r.t. the direct-sum measure, shape ``sample + batch``."""
        self._check_event(y, "y")
        if self._checks_values(y):
            self._check_on_simplex(y)
        return self._log_prob(y)

    def face_log_prob(self, mask: Array) -> Array:
        """``log P(F = f)`` of boolean face masks (shape ``... + batch + (K,)``); empty: -inf."""
        self._check_event(mask, "mask")
        if mask.dtype != self._xp.bool:
            raise TypeError(f"mask must be a boolean array, got dtype {mask.dtype}")
        return self._face_log_prob(mask)

    # -- to implement ---------------------------------------------------------------------------

    def _sample(self, rng: Any, sample_shape: tuple[int, ...]) -> Array:
        raise NotImplementedError

    def _rsample(self, rng: Any, sample_shape: tuple[int, ...]) -> Array:
        raise NotImplementedError

    def _log_prob(self, y: Array) -> Array:
        raise NotImplementedError

    def _face_log_prob(self, mask: Array) -> Array:
        raise NotImplementedError

    # -- helpers for subclasses -----------------------------------------------------------------

    def _check_event(self, x: Array, name: str) -> None:
        if _backend.library_name(x) != _backend.library_name(self._like):
            raise TypeError(
                f"{name} is a {_backend.library_name(x)} array but the distribution's "
                f"parameters are {_backend.library_name(self._like)} arrays"
            )
        shape = tuple(x.shape)
        if not shape or shape[-1] != self._num_vertices:
            raise ValueError(
                f"{name} must have {self._num_vertices} entries on its last axis (the event "
                f"shape), got shape {shape}"
            )
        batch = self._batch_shape
        for got, want in zip(reversed(shape[:-1]), reversed(batch), strict=False):
            if got != want and 1 not in (got, want):
                raise ValueError(
                    f"{name} of shape {shape} does not broadcast against batch_shape {batch}"
                )

    def _check_on_simplex(self, y: Array) -> None:
        xp = self._xp
        tolerance = 64 * float(xp.finfo(y.dtype).eps) * max(1, self._num_vertices)
        lowest = _backend.host_float(xp.min(y)) if math.prod(y.shape) else 0.0
        if not lowest >= 0:
            raise ValueError(f"y must lie on the simplex: it has a negative entry ({lowest})")
        error = _backend.host_float(xp.max(xp.abs(xp.sum(y, axis=-1) - 1)))
        if not error <= tolerance:
            raise ValueError(
                f"y must lie on the simplex: its entries sum to 1 ± {error:.3g} on the last axis"
            )
