"""The test harness itself: ``--backends`` selection, the device guards, and ``bench/gpu.py``.

What runs everywhere: option parsing; the selection seen by a pytest run in a subprocess; the
CuPy patching against a stand-in module (a base class and a subclass, as CuPy's ``ndarray``);
the JAX guard's configuration on the CPU; that CPU backends run unguarded; and the benchmark
script's dry run.  What needs a GPU (skipped with the reason otherwise): a deliberate host read
inside a guarded region raises for torch on CUDA, JAX on the GPU and CuPy.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    ALL_BACKENDS,
    CPU_BACKENDS,
    GPU_BACKENDS,
    HostTransferError,
    HostTransferWarning,
    allow_host_transfers,
    device_guards,
    engaged_guards,
    from_numpy,
    host_transfers_allowed,
    library_of,
    parse_backends,
    to_numpy,
)

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


# ---------------------------------------------------------------------------------------------
# --backends


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, ALL_BACKENDS),
        ("", ALL_BACKENDS),
        ("all", ALL_BACKENDS),
        ("gpu", ("cupy", "torch-cuda", "jax-gpu")),
        ("cpu", ("numpy", "array_api_strict", "torch", "jax")),
        ("torch,numpy", ("numpy", "torch")),  # the matrix's order, whatever the list's
        ("numpy, numpy ,", ("numpy",)),
        ("torch_cuda,JAX-GPU", ("torch-cuda", "jax-gpu")),
        ("array-api-strict", ("array_api_strict",)),
        ("cpu,cupy", ("numpy", "array_api_strict", "torch", "jax", "cupy")),
    ],
)
def test_parse_backends(text, expected):
    assert parse_backends(text) == expected


@pytest.mark.parametrize("text", ["bogus", "numpy,cuda", ",", " , "])
def test_parse_backends_rejects_unknown_names(text):
    with pytest.raises(ValueError, match="--backends"):
        parse_backends(text)


def test_groups_partition_the_matrix():
    assert set(CPU_BACKENDS) | set(GPU_BACKENDS) == set(ALL_BACKENDS)
    assert not set(CPU_BACKENDS) & set(GPU_BACKENDS)


PROBE = """
import os
import re
import sys

import helpers
import pytest


def test_matrix(backend):
    name = helpers.library_of(backend)
    on_gpu = "cuda" in str(backend[1]).lower() or "gpu" in str(backend[1]).lower() or name == "cupy"
    assert helpers.engaged_guards() == ((name,) if on_gpu else ())


def test_cpu_only(cpu_backend):
    assert helpers.engaged_guards() == ()


def test_plain():
    assert helpers.engaged_guards() == ()


@pytest.mark.parametrize("cpu_backend", ["numpy", "torch"], indirect=True)
def test_own_list(cpu_backend):
    assert helpers.engaged_guards() == ()


def test_no_framework_imported_for_the_guards():
    if os.environ.get("PROBE_NO_FRAMEWORKS"):  # a run over NumPy and array-api-strict only
        assert not {"torch", "jax", "cupy"} & set(sys.modules)
"""


def _probe(
    tmp_path: Path, *args: str, env: dict | None = None, quiet: bool = True
) -> subprocess.CompletedProcess:
    """Run pytest on a throwaway test file next to copies of this suite's conftest and helpers."""
    for name in ("conftest.py", "helpers.py"):
        (tmp_path / name).write_text((TESTS / name).read_text())
    (tmp_path / "test_probe.py").write_text(textwrap.dedent(PROBE))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", *args]
    if quiet:
        command.append("-q")
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=environment
    )


def _collected(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_backends_option_selects_the_matrix(tmp_path):
    result = _probe(tmp_path, "--collect-only", "--backends", "torch,numpy")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(_collected(result)) == sorted(
        [
            "test_probe.py::test_matrix[numpy]",
            "test_probe.py::test_matrix[torch]",
            "test_probe.py::test_cpu_only[numpy]",
            "test_probe.py::test_cpu_only[torch]",
            "test_probe.py::test_plain",
            "test_probe.py::test_own_list[numpy]",
            "test_probe.py::test_own_list[torch]",
            "test_probe.py::test_no_framework_imported_for_the_guards",
        ]
    )


def test_backends_default_is_the_whole_matrix_and_env_overrides_it(tmp_path):
    everything = _probe(tmp_path, "--collect-only", env={"MIXEDARRAY_BACKENDS": ""})
    assert [f"test_probe.py::test_matrix[{name}]" for name in ALL_BACKENDS] == [
        line for line in _collected(everything) if "test_matrix" in line
    ]
    from_env = _probe(tmp_path, "--collect-only", env={"MIXEDARRAY_BACKENDS": "jax"})
    assert "test_probe.py::test_matrix[jax]" in _collected(from_env)
    assert len([line for line in _collected(from_env) if "test_matrix" in line]) == 1


def test_gpu_selection_skips_cpu_only_tests_with_a_reason(tmp_path):
    result = _probe(tmp_path, "--backends", "gpu", quiet=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "names no CPU backend" in result.stdout
    assert "device guards on GPU backends: error" in result.stdout
    if not _gpu_present():
        # Every GPU backend is a visible skip with its reason; the unparametrised test runs.
        assert "2 passed" in result.stdout and "6 skipped" in result.stdout
    assert "backend numpy is not selected by --backends" in result.stdout


def test_unknown_backend_is_a_usage_error(tmp_path):
    result = _probe(tmp_path, "--collect-only", "--backends", "numpy,tpu")
    assert result.returncode == 4  # pytest's usage error
    assert "unknown backend 'tpu'" in result.stderr


def test_probe_runs_cpu_backends_unguarded(tmp_path):
    result = _probe(
        tmp_path, "--backends", "numpy,array_api_strict", env={"PROBE_NO_FRAMEWORKS": "1"}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 passed, 1 skipped" in result.stdout

    header = _probe(tmp_path, "--collect-only", "--backends", "numpy,array_api_strict", quiet=False)
    assert "mixedarray backends: numpy, array_api_strict" in header.stdout
    assert "device guards" not in header.stdout  # no GPU backend selected


# ---------------------------------------------------------------------------------------------
# The autouse guard fixture in this very run


def test_guards_follow_the_backend(backend, request):
    """CPU backends run unguarded; on a GPU backend the test body runs inside its guard.

    Under ``--device-guards simulate`` the CPU torch backend is guarded too (by the simulation).
    """
    lib = library_of(backend)
    device = str(backend[1]).lower()
    on_gpu = lib == "cupy" or "cuda" in device or "gpu" in device
    simulated = request.config.getoption("device_guards") == "simulate" and lib == "torch"
    guarded = on_gpu or simulated
    assert engaged_guards() == ((lib,) if guarded else ())
    assert host_transfers_allowed() is not guarded
    with allow_host_transfers():
        assert host_transfers_allowed()
    # The test's own round trip goes through the helpers, which lift the guard.
    x = from_numpy(backend, np.arange(3.0))
    np.testing.assert_array_equal(to_numpy(x * 2), [0.0, 2.0, 4.0])


@pytest.mark.allow_host_transfers
def test_allow_host_transfers_marker_turns_the_guard_off(backend):
    assert engaged_guards() == ()


def test_guard_arguments_are_checked():
    with pytest.raises(ValueError, match="mode"), device_guards("torch", "loud"):
        pass
    with pytest.raises(ValueError, match="no device guard"), device_guards("numpy"):
        pass
    with device_guards("cupy", "off") as guard:  # off: nothing imported, nothing engaged
        assert guard is None and engaged_guards() == ()


# ---------------------------------------------------------------------------------------------
# CuPy patching, against a stand-in with CuPy's layout (methods on a base class, the array type
# a subclass of it, a module-level asnumpy)


class _FakeBase:
    def __init__(self, value):
        self.value = np.asarray(value)

    def get(self, stream=None):
        return self.value.copy()

    def __array__(self, dtype=None, copy=None):
        return self.value if dtype is None else self.value.astype(dtype)

    def item(self):
        return self.value.item()

    def tolist(self):
        return self.value.tolist()

    def __bool__(self):
        return bool(self.value)

    def __float__(self):
        return float(self.value)

    def __int__(self):
        return int(self.value)

    def __index__(self):
        return int(self.value)

    def __complex__(self):
        return complex(self.value)

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        return ("capsule", dl_device)


def _fake_cupy():
    class ndarray(_FakeBase):  # CuPy's name
        __module__ = "cupy._core.fake"

        def tolist(self):  # defined on the subclass itself: must be put back, not deleted
            return self.value.tolist()

    own_tolist = vars(ndarray)["tolist"]
    module = type(sys)("cupy_stand_in")
    module.ndarray = ndarray
    module.asnumpy = lambda a, stream=None: a.get(stream)
    return module, own_tolist


READS = {
    "get": lambda a: a.get(),
    "asnumpy": None,  # filled per module below
    "__array__": lambda a: np.asarray(a),
    "item": lambda a: a.item(),
    "tolist": lambda a: a.tolist(),
    "__bool__": lambda a: bool(a),
    "__float__": lambda a: float(a),
    "__int__": lambda a: int(a),
    "__index__": lambda a: [10, 20, 30][a],
    "__complex__": lambda a: complex(a),
    "__dlpack__": lambda a: a.__dlpack__(dl_device=(1, 0)),
}


@pytest.mark.parametrize("entry", list(READS))
def test_cupy_guard_blocks_each_host_read(entry):
    cupy, _ = _fake_cupy()
    read = READS[entry] or (lambda a: cupy.asnumpy(a))
    a = cupy.ndarray(1.0 if entry not in ("__int__", "__index__") else 1)
    expected = read(a)
    with device_guards("cupy", module=cupy):
        assert engaged_guards() == ("cupy",)
        with pytest.raises(HostTransferError, match="CuPy array") as caught:
            read(a)
        assert entry.strip("_") in str(caught.value)
        assert "helpers.to_numpy" in str(caught.value)
        with allow_host_transfers():
            assert repr(read(a)) == repr(expected)
    assert repr(read(a)) == repr(expected)  # restored
    assert engaged_guards() == ()


def test_cupy_guard_lets_device_side_dlpack_through():
    cupy, _ = _fake_cupy()
    a = cupy.ndarray([1.0, 2.0])
    with device_guards("cupy", module=cupy):
        assert a.__dlpack__() == ("capsule", None)
        assert a.__dlpack__(dl_device=(2, 0)) == ("capsule", (2, 0))  # kDLCUDA


def test_cupy_guard_restores_the_classes_exactly():
    cupy, own_tolist = _fake_cupy()
    before = dict(vars(cupy.ndarray))
    asnumpy = cupy.asnumpy
    with device_guards("cupy", module=cupy):
        assert vars(cupy.ndarray)["get"] is not _FakeBase.get
        assert cupy.asnumpy is not asnumpy
    assert dict(vars(cupy.ndarray)) == before  # inherited methods uncovered, own ones put back
    assert vars(cupy.ndarray)["tolist"] is own_tolist
    assert cupy.asnumpy is asnumpy
    assert "get" not in vars(cupy.ndarray) and cupy.ndarray.get is _FakeBase.get


def test_cupy_guard_restores_after_an_error_in_the_body():
    cupy, _ = _fake_cupy()
    before = dict(vars(cupy.ndarray))
    with pytest.raises(KeyError), device_guards("cupy", module=cupy):
        raise KeyError("boom")
    assert dict(vars(cupy.ndarray)) == before and engaged_guards() == ()


def test_cupy_guard_explains_an_immutable_array_type():
    """CuPy < 13 made ndarray an extension type, whose methods cannot be patched."""
    module = type(sys)("old_cupy")
    module.ndarray = memoryview  # immutable, with a tolist and friends
    module.asnumpy = lambda a: np.asarray(a)
    original = module.asnumpy
    with pytest.raises(RuntimeError, match="CuPy >= 13"), device_guards("cupy", module=module):
        pass
    assert module.asnumpy is original and engaged_guards() == ()


def test_lifts_nest_and_guards_engaged_while_lifted_start_lifted():
    cupy, _ = _fake_cupy()
    a = cupy.ndarray(2.0)
    with allow_host_transfers(), device_guards("cupy", module=cupy):
        assert float(a) == 2.0  # engaged inside a lift: lifted
    with device_guards("cupy", module=cupy):
        with allow_host_transfers():
            with allow_host_transfers():
                assert float(a) == 2.0
            assert float(a) == 2.0  # the outer lift still holds
        with pytest.raises(HostTransferError):
            float(a)


def test_helpers_read_through_the_guard():
    cupy, _ = _fake_cupy()
    a = cupy.ndarray([1.0, 2.0])
    with device_guards("cupy", module=cupy):
        np.testing.assert_array_equal(to_numpy(a), [1.0, 2.0])  # to_numpy calls a.get()
        with pytest.raises(HostTransferError):
            a.get()


def test_cupy_guard_warn_mode_warns_and_reads():
    cupy, _ = _fake_cupy()
    a = cupy.ndarray(3.0)
    with device_guards("cupy", "warn", module=cupy):
        with pytest.warns(HostTransferWarning, match=r"cupy\.ndarray\.__float__"):
            assert float(a) == 3.0
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with allow_host_transfers():
                assert float(a) == 3.0  # lifted: silent


def test_guards_nest_across_the_two_import_names_of_helpers():
    """Tests import this module as ``helpers`` and as ``tests.helpers``: one shared state."""
    sys.path.insert(0, str(ROOT))
    try:
        import tests.helpers as other
    finally:
        sys.path.remove(str(ROOT))
    cupy, _ = _fake_cupy()
    a = cupy.ndarray(1.5)
    with device_guards("cupy", module=cupy):
        assert other.engaged_guards() == ("cupy",)
        with pytest.raises(other.HostTransferError):
            float(a)
        with other.allow_host_transfers():
            assert float(a) == 1.5


# ---------------------------------------------------------------------------------------------
# JAX: the guard's configuration (on a CPU device-to-host reads are not transfers, so only the
# settings can be checked here)


def test_jax_guard_sets_and_restores_the_transfer_guard():
    pytest.importorskip("jax")
    from jax._src import config

    setting = config.transfer_guard_device_to_host
    before = setting.value
    with device_guards("jax"):
        assert setting.value == "disallow_explicit"
        with allow_host_transfers():
            assert setting.value == "allow"
        assert setting.value == "disallow_explicit"
    assert setting.value == before
    with device_guards("jax", "warn"):
        assert setting.value == "log_explicit"
    assert setting.value == before


# ---------------------------------------------------------------------------------------------
# On a GPU: a deliberate host read inside the guard raises


def _cupy_installed() -> bool:
    return importlib.util.find_spec("cupy") is not None


def _gpu_present() -> bool:
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return True
    if _cupy_installed():
        try:
            import cupy

            return cupy.cuda.runtime.getDeviceCount() > 0
        except Exception:
            return False
    return False


def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch")
    return torch


def test_torch_guard_on_cuda():
    torch = _torch_cuda()
    x = torch.arange(4.0, device="cuda")
    before = torch.cuda.get_sync_debug_mode()
    with device_guards("torch"):
        y = (x * 2).sum()  # device work stays allowed
        for read in (lambda: y.item(), lambda: float(y), lambda: bool(y > 0), lambda: x.cpu()):
            with pytest.raises(RuntimeError, match="synchroniz"):
                read()
        with pytest.raises(RuntimeError, match="synchroniz"):
            torch.nonzero(x)  # output size depends on values
        with allow_host_transfers():
            assert y.item() == 12.0
        np.testing.assert_array_equal(to_numpy(x), [0.0, 1.0, 2.0, 3.0])
    assert torch.cuda.get_sync_debug_mode() == before
    assert y.item() == 12.0


def test_jax_guard_on_gpu():
    jax = pytest.importorskip("jax")
    try:
        device = jax.devices("gpu")[0]
    except RuntimeError:
        pytest.skip("no GPU device for jax")
    x = jax.device_put(jax.numpy.arange(4.0), device)
    with device_guards("jax"):
        y = (x * 2).sum()
        for read in (lambda: float(y), lambda: np.asarray(x), lambda: jax.device_get(x)):
            with pytest.raises(Exception, match=r"(?i)disallowed.*device-to-host"):
                read()
        _ = jax.numpy.asarray([1.0, 2.0])  # host-to-device constants stay allowed
        with allow_host_transfers():
            assert float(y) == 12.0
        np.testing.assert_array_equal(to_numpy(x), [0.0, 1.0, 2.0, 3.0])
    assert float(y) == 12.0


def test_cupy_guard_on_gpu():
    cupy = pytest.importorskip("cupy")
    try:
        present = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        present = False
    if not present:
        pytest.skip("no CUDA device for cupy")
    x = cupy.arange(4.0)
    with device_guards("cupy"):
        y = (x * 2).sum()
        reads = {
            "get": lambda: x.get(),
            "asnumpy": lambda: cupy.asnumpy(x),
            "__array__": lambda: np.asarray(x),
            "item": lambda: y.item(),
            "tolist": lambda: x.tolist(),
            "__bool__": lambda: bool(y > 0),
            "__float__": lambda: float(y),
            "__int__": lambda: int(y),
        }
        for name, read in reads.items():
            with pytest.raises(HostTransferError, match=name.strip("_")):
                read()
        with allow_host_transfers():
            assert float(y) == 12.0
        np.testing.assert_array_equal(to_numpy(x), [0.0, 1.0, 2.0, 3.0])
    assert float(y) == 12.0


# ---------------------------------------------------------------------------------------------
# bench/gpu.py


BENCH = ROOT / "bench" / "gpu.py"


def _bench(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, str(BENCH), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
    )


def _results_state() -> tuple[bool, float]:
    results = ROOT / "bench" / "RESULTS.md"
    return results.exists(), results.stat().st_mtime if results.exists() else 0.0


def test_bench_gpu_exits_cleanly_without_a_cuda_device():
    pytest.importorskip("torch")
    before = _results_state()
    result = _bench(env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no CUDA device" in result.stdout
    assert _results_state() == before


def test_bench_gpu_cpu_dry_run_exercises_every_path_and_writes_nothing(tmp_path):
    pytest.importorskip("torch")
    before = _results_state()
    output = tmp_path / "RESULTS.md"
    result = _bench("--cpu-dry-run", "--output", str(output))
    assert result.returncode == 0, result.stdout + result.stderr
    assert not output.exists()
    assert _results_state() == before
    text = result.stdout
    assert "dry run" in text and "nothing written" in text
    for row in (
        "sparsemax 8192×1000",
        "entmax15 8192×1000",
        "face statistics K=10",
        "entropy",
        "10^9",
    ):
        assert row in text, row


# ---------------------------------------------------------------------------------------------
# --device-guards simulate: the torch-CUDA guard's verdicts on CPU tensors (CI has no GPU)


def test_simulated_torch_cuda_guard_flags_what_cuda_would():
    torch = pytest.importorskip("torch")
    from mixedarray import _backend

    t = torch.arange(4.0)
    with device_guards("torch", "simulate"):
        assert engaged_guards() == ("torch",)
        assert not _backend.values_are_checkable(t)  # as on CUDA: no value checks by default
        for what, call in [
            ("torch.asarray", lambda: torch.asarray([1.0, 2.0], device="cpu")),
            ("torch.tensor", lambda: torch.tensor(np.ones(2), device="cpu")),
            ("Tensor.__float__", lambda: float(t[0])),
            ("Tensor.__bool__", lambda: bool(t[0] > 1)),
            ("Tensor.item", lambda: t.sum().item()),
            ("torch.nonzero", lambda: torch.nonzero(t)),
            ("boolean-mask indexing", lambda: t[t > 1]),
        ]:
            with pytest.raises(HostTransferError, match=re.escape(what)):
                call()
        # allowed: device-side work, Python scalars as operands, tensors built without host data
        assert tuple((t * 2.0 + torch.zeros(4)).shape) == (4,)
        assert torch.asarray(t, device="cpu") is not None
        with allow_host_transfers():
            assert float(t[1]) == 1.0
    assert engaged_guards() == ()
    assert float(t[1]) == 1.0 and _backend.values_are_checkable(t)


def test_library_calls_pass_the_simulated_torch_cuda_guard():
    """The distributions, estimators and face statistics on torch, under the simulated guard.

    What ``torch.cuda.set_sync_debug_mode("error")`` rejects on a GPU (host reads, value-dependent
    shapes, pageable host-to-device copies) is rejected here on CPU tensors, so a library call
    that would synchronise a CUDA stream fails on a machine without a GPU too.
    """
    pytest.importorskip("torch")
    files = [
        "tests/distributions",
        "tests/test_information.py",
        "tests/test_face_frequencies.py",
        "tests/test_montecarlo.py",
        "tests/test_faces.py",
    ]
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
        "--backends", "torch", "--device-guards", "simulate", *files,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    summary = result.stdout.strip().splitlines()[-1:] or [""]
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in summary[0] and "failed" not in summary[0], summary
