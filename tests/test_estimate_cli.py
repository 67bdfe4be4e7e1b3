"""``python -m mixedarray estimate``: options, parameter files, results and errors."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from mixedarray.__main__ import main

ETA = [0.3, -0.5, 1.1]


def _run(capsys, *argv: str) -> dict:
    assert main(["estimate", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _enumerated(eta: list[float]) -> tuple[np.ndarray, np.ndarray]:
    K = len(eta)
    masks = np.array([[(c >> k) & 1 for k in range(K)] for c in range(1, 2**K)], dtype=bool)
    p = 1 / (1 + np.exp(-np.asarray(eta)))
    w = np.prod(np.where(masks, p, 1 - p), axis=-1)
    return masks, w / w.sum()


def test_help_documents_every_option():
    out = subprocess.run(
        [sys.executable, "-m", "mixedarray", "estimate", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for option in (
        "--param",
        "--params",
        "-K",
        "--what",
        "--reference",
        "--bits",
        "--table",
        "--samples",
        "--chunk-size",
        "--backend",
        "--device",
        "--dtype",
        "--seed",
        "--progress",
        "--json",
    ):
        assert option in out, option
    assert "gaussian-sparsemax" in out and "mixed-dirichlet" in out


@pytest.mark.allow_host_transfers  # the CLI is a host program: it reads files and prints
@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_mixed_dirichlet_estimates_agree_with_exact_values(capsys, backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    results = _run(
        capsys,
        "mixed-dirichlet",
        "--param",
        "face_logits=" + ",".join(map(str, ETA)),
        "--param",
        "concentration=1.5",
        "-n",
        "40000",
        "--backend",
        backend,
        "--table",
    )
    assert results["K"] == 3 and results["samples"] == 40_000 and results["backend"] == backend
    for key in ("entropy", "kl", "cross-entropy"):
        entry = results[key]
        assert abs(entry["value"] - entry["exact"]) < 4.5 * entry["stderr"] + 1e-12, key
    masks, probs = _enumerated(ETA)
    table = results["face_probs"]
    z = np.abs(np.array(table["value"]) - probs) / np.array(table["stderr"])
    assert np.max(z) < 4.5
    z = np.abs(np.array(results["marginals"]["value"]) - (masks * probs[:, None]).sum(0))
    assert np.max(z / np.array(results["marginals"]["stderr"])) < 4.5


def test_parameter_files_and_batches(capsys, tmp_path):
    path = tmp_path / "params.json"
    path.write_text(json.dumps({"loc": [[0.4, 0.1, -0.3], [0.0, 0.0, 0.0]], "scale": [0.5]}))
    results = _run(capsys, "gaussian-sparsemax", "--params", str(path), "-n", "2000")
    assert results["batch_shape"] == [2]
    assert len(results["entropy"]["value"]) == 2
    assert np.allclose(np.sum(results["size_probs"]["value"], axis=-1), 1.0)
    npz = tmp_path / "params.npz"
    np.savez(npz, loc=np.array([0.3, 0.0]), scale=np.array([1.0, 1.0]))
    results = _run(capsys, "gaussian-sparsemax", "--params", str(npz), "--what", "entropy")
    # K = 2 has a closed-form entropy: the estimate agrees with it.
    entry = results["entropy"]
    assert abs(entry["value"] - entry["exact"]) < 4.5 * entry["stderr"]
    assert set(results) >= {"entropy"} and "kl" not in results


def test_reference_distribution_from_a_file(capsys, tmp_path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps({"face_logits": [0.0, 0.0, 0.0], "concentration": [1.0]}))
    results = _run(
        capsys,
        "mixed-dirichlet",
        "--param",
        "face_logits=0.3,-0.5,1.1",
        "--param",
        "concentration=2",
        "--reference",
        str(path),
        "--what",
        "kl",
        "-n",
        "20000",
    )
    entry = results["kl"]
    assert entry["value"] > 0 and abs(entry["value"] - entry["exact"]) < 4.5 * entry["stderr"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--param", "loc=0.1,0.2"], "missing: scale"),
        (["--param", "loc=0.1,0.2", "--param", "scale=1", "--param", "x=1"], "unknown: x"),
        (["--param", "loc=a,b", "--param", "scale=1"], "values must be numbers"),
        (["--param", "loc=0.1", "--param", "scale=1"], "give -K"),
        (["--param", "loc=0.1,0.2", "--param", "scale=1", "-n", "1"], "--samples"),
        (["--params", "p.csv"], "expected a .json or .npz"),
    ],
)
def test_errors_name_the_option(argv, message):
    done = subprocess.run(
        [sys.executable, "-m", "mixedarray", "estimate", "gaussian-sparsemax", *argv],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert message in done.stderr, done.stderr


def test_chunk_size_and_progress_reach_every_estimate(capsys):
    argv = ["estimate", "gaussian-sparsemax", "--param", "loc=0.4,0.1,-0.3", "--param",
            "scale=0.5", "-n", "2000", "--chunk-size", "500", "--progress", "--json"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert {"entropy", "kl", "cross-entropy", "size_probs"} <= set(results)
    # entropy, KL, cross-entropy and the face statistics: each four chunks of 500
    assert captured.err.count("4/4") >= 4, captured.err
