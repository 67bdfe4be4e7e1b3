"""Shared fixtures: the ``backend`` matrix over every installed array library, and device guards.

``backend`` yields ``(xp, device)``: an array-API namespace and the device to put test inputs
on.  A library that is not installed (or a GPU that is not present) is a visible skip with its
reason, never a silent pass.  JAX runs with float64 enabled.

Options (``python -m pytest --help``, group "mixedarray"):

``--backends LIST``
    Which backends the matrix runs: a comma list of ``numpy``, ``array_api_strict``,
    ``torch``, ``jax``, ``cupy``, ``torch-cuda``, ``jax-gpu`` and the groups ``cpu``, ``gpu``,
    ``all`` (default ``all``, or the ``MIXEDARRAY_BACKENDS`` environment variable).
    ``python -m pytest --backends gpu`` runs every backend-parametrised test on CuPy, torch on
    ``cuda`` and JAX on the GPU.  ``cpu_backend`` tests keep the CPU backends of the list (and
    are skipped, with that reason, when it names none).
``--device-guards {error,warn,off,simulate}``
    On the GPU backends every test runs inside :func:`helpers.device_guards` (default
    ``error``): a device-to-host transfer raises — torch ``set_sync_debug_mode("error")``, JAX
    ``transfer_guard_device_to_host("disallow_explicit")``, CuPy's host-read entry points
    patched.  The test's own reads go through ``helpers.to_numpy`` / ``from_numpy``, which lift
    the guards (``helpers.allow_host_transfers``), so a failure names a transfer made by the
    library.  A test that asks the library for a host read on purpose (``validate_args=True``
    on a GPU array) carries ``@pytest.mark.allow_host_transfers``.  CPU backends are never
    guarded and import nothing for it, except under ``simulate``: GPU backends as ``error``,
    and the CPU ``torch`` backend under a simulation of the torch-CUDA guard (host reads,
    value-dependent shapes and host data copied to a device raise), for machines without a
    GPU.  See ``docs/gpu.md``.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
from helpers import (
    ALL_BACKENDS,
    CPU_BACKENDS,
    GPU_BACKENDS,
    GUARD_MODES,
    backend_library,
    device_guards,
    parse_backends,
)

os.environ.setdefault("JAX_ENABLE_X64", "1")

BACKENDS = list(ALL_BACKENDS)
_SELECTED = pytest.StashKey[tuple]()
_ENV = "MIXEDARRAY_BACKENDS"


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cuda_available() -> bool:
    if not _have("cupy"):
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _make_backend(name: str):
    if name == "numpy":
        if not _have("numpy"):
            pytest.skip("numpy is not installed")
        import array_api_compat.numpy as xp

        return xp, "cpu"
    if name == "array_api_strict":
        if not _have("array_api_strict"):
            pytest.skip("array-api-strict is not installed")
        import array_api_strict as xp

        return xp, xp.Device("CPU_DEVICE")
    if name in ("torch", "torch-cuda"):
        if not _have("torch"):
            pytest.skip("torch is not installed")
        import array_api_compat.torch as xp
        import torch

        if name == "torch-cuda":
            if not torch.cuda.is_available():
                pytest.skip("no CUDA device for torch")
            return xp, torch.device("cuda")
        return xp, torch.device("cpu")
    if name in ("jax", "jax-gpu"):
        if not _have("jax"):
            pytest.skip("jax is not installed")
        import jax
        import jax.numpy as xp

        jax.config.update("jax_enable_x64", True)
        if name == "jax-gpu":
            try:
                return xp, jax.devices("gpu")[0]
            except RuntimeError:
                pytest.skip("no GPU device for jax")
        return xp, jax.devices("cpu")[0]
    if name == "cupy":
        if not _cuda_available():
            pytest.skip("cupy is not installed or no CUDA device is present")
        import array_api_compat.cupy as xp
        import cupy

        return xp, cupy.cuda.Device(0)
    raise ValueError(name)


# ---------------------------------------------------------------------------------------------
# Options


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mixedarray", "mixedarray backend matrix")
    group.addoption(
        "--backends",
        default=None,
        metavar="LIST",
        help=(
            "backends of the `backend` fixture, comma-separated: "
            f"{', '.join(ALL_BACKENDS)}, or the groups cpu, gpu, all "
            f"(default: ${_ENV} or all; `gpu` = {','.join(GPU_BACKENDS)})"
        ),
    )
    group.addoption(
        "--device-guards",
        default="error",
        choices=GUARD_MODES,
        help=(
            "on GPU backends, what a device-to-host transfer inside a test does: error "
            "(default), warn, or off; simulate: also guard CPU torch tests with a simulation "
            "of the torch-CUDA guard"
        ),
    )


def pytest_configure(config: pytest.Config) -> None:
    text = config.getoption("backends", default=None)
    if text is None:
        text = os.environ.get(_ENV)
    try:
        config.stash[_SELECTED] = parse_backends(text)
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None
    config.addinivalue_line(
        "markers",
        "allow_host_transfers: the test reads GPU arrays on the host on purpose; no device "
        "guards (see docs/gpu.md)",
    )


def selected_backends(config: pytest.Config) -> tuple[str, ...]:
    """The backends chosen by ``--backends`` (all of them when the option is absent)."""
    return config.stash.get(_SELECTED, ALL_BACKENDS)


def pytest_report_header(config: pytest.Config) -> list[str]:
    chosen = selected_backends(config)
    guards = config.getoption("device_guards", default="error")
    line = f"mixedarray backends: {', '.join(chosen)}"
    if any(name in GPU_BACKENDS for name in chosen):
        line += f"; device guards on GPU backends: {guards}"
    return [line]


def _parametrized_by_the_test(metafunc: pytest.Metafunc, name: str) -> bool:
    """Whether the test's own ``@pytest.mark.parametrize`` already covers ``name``."""
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        if name in names:
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    chosen = selected_backends(metafunc.config)
    fixtures = metafunc.fixturenames
    if "backend" in fixtures and not _parametrized_by_the_test(metafunc, "backend"):
        metafunc.parametrize("backend", chosen, indirect=True, scope="session")
    if "cpu_backend" in fixtures and not _parametrized_by_the_test(metafunc, "cpu_backend"):
        cpu = [name for name in chosen if name in CPU_BACKENDS]
        if not cpu:
            reason = f"--backends {','.join(chosen)} names no CPU backend"
            cpu = [pytest.param("numpy", marks=pytest.mark.skip(reason=reason), id="no-cpu")]
        metafunc.parametrize("cpu_backend", cpu, indirect=True, scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that lists its own backends runs only those that ``--backends`` selects."""
    chosen = selected_backends(config)
    if chosen == ALL_BACKENDS:
        return
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        for name in ("backend", "cpu_backend"):
            value = params.get(name)
            if isinstance(value, str) and value in ALL_BACKENDS and value not in chosen:
                reason = f"backend {value} is not selected by --backends {','.join(chosen)}"
                item.add_marker(pytest.mark.skip(reason=reason))


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def backend(request):
    """``(xp, device)`` for every selected array library (and GPU devices when present)."""
    return _make_backend(request.param)


@pytest.fixture(scope="session")
def cpu_backend(request):
    """The CPU backends alone, for tests that inspect values on the host by design."""
    return _make_backend(request.param)


def _backend_name(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return None if callspec is None else callspec.params.get("backend")


@pytest.fixture(autouse=True)
def _device_guards(request):
    """On a GPU backend, run the test with host transfers of its library guarded.

    With ``--device-guards simulate``, the CPU ``torch`` backend is guarded too, by the
    simulation of the torch-CUDA guard (``helpers.SimulatedTorchCudaGuard``).
    """
    name = _backend_name(request.node)
    mode = request.config.getoption("device_guards", default="error")
    simulated = mode == "simulate" and name == "torch"
    if (
        (name not in GPU_BACKENDS and not simulated)
        or mode == "off"
        or request.node.get_closest_marker("allow_host_transfers") is not None
    ):
        yield
        return
    request.getfixturevalue("backend")  # build the backend first: a missing GPU skips here
    with device_guards(backend_library(name), mode):
        yield
