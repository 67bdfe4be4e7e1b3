"""``import mixedarray`` imports no framework; a call imports only the caller's adapter.

Each check runs in a fresh interpreter (``sys.executable -c``), since this test process has
imported every framework already.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("torch", "jax", "cupy", "numba", "scipy", "array_api_strict")

# Prints, one per line, "<stage> <comma-separated OPTIONAL modules and adapters imported>".
PROLOGUE = f"""
import sys

def report(stage):
    watched = {OPTIONAL!r} + ("mixedarray.torch", "mixedarray.jax")
    print(stage, ",".join(m for m in watched if m in sys.modules))
"""


def run(code):
    """Run ``PROLOGUE + code`` in a fresh interpreter; return ``{stage: modules it reported}``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("JAX_ENABLE_X64", None)
    result = subprocess.run([sys.executable, "-c", PROLOGUE + textwrap.dedent(code)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    stages = (line.partition(" ") for line in result.stdout.splitlines())
    return {stage: set(filter(None, modules.split(","))) for stage, _, modules in stages}


def test_import_mixedarray_imports_no_optional_library():
    stages = run("""
        report("start")
        import mixedarray
        import mixedarray.projections, mixedarray.random, mixedarray._backend
        report("imported")
    """)
    assert stages == {"start": set(), "imported": set()}


CALL = """
import mixedarray as ma
z = {make}
report("before")
for y in (ma.sparsemax(z), ma.entmax15(z), ma.entmax(z, 1.5), ma.softmax(z)):
    assert type(y) is type(z)
report("after")
"""
CALLERS = {
    "numpy": ("numpy", "numpy.asarray([[1.0, 0.5, -1.0]])", set()),
    "torch": ("torch", "torch.tensor([[1.0, 0.5, -1.0]])", {"torch", "mixedarray.torch"}),
    "jax": ("jax", "jax.numpy.asarray([[1.0, 0.5, -1.0]])", {"jax", "mixedarray.jax"}),
}


@pytest.mark.parametrize("library", CALLERS)
def test_call_imports_only_the_callers_adapter(library):
    """A NumPy call imports neither torch nor jax; a torch call no jax; a JAX call no torch.

    The adapter of the caller's own library is loaded (lazily, at the first call), which
    shows the subprocess did reach the framework-specific rules.
    """
    module, make, adapters = CALLERS[library]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    setup = f"import {module}\nimport {module}.numpy\n" if module == "jax" else f"import {module}\n"
    stages = run(setup + CALL.format(make=make))
    frameworks = {"torch", "jax", "cupy", "array_api_strict", "mixedarray.torch", "mixedarray.jax"}
    assert stages["before"] & frameworks == {module} - {"numpy"}
    assert stages["after"] & frameworks == adapters
