"""benchmarks/gpu_check.py on the CPU: the accelerator's script must not be broken when one comes.

It trains under JAX (what the accelerator machine has) without TensorFlow's tf.data or MLflow,
so these tests run its train step under KERAS_BACKEND=jax in a fresh process, then score the result
with the project's evaluation here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import load_benchmark
from tests.lfw_fixtures import write_tiny_prepared
from tests.lpips_fixtures import random_sdist

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
TINY = ["model.widths=[8,16]", "model.latent_dim=4"]  # the default model, made tiny


def load_script():
    return load_benchmark("gpu_check")


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def train_under_jax(
    data: Path, out: Path, epochs: int, batches: str, *overrides: str
) -> subprocess.CompletedProcess:
    """The GPU check's train step on the CPU under JAX, the default model made tiny."""
    return run(
        "train",
        "--cpu",
        "--data",
        str(data),
        "--epochs",
        str(epochs),
        "--batch-sizes",
        batches,
        "--out",
        str(out),
        *TINY,
        *overrides,
        env={"KERAS_BACKEND": "jax"},
    )


def test_pack_keeps_train_and_val_as_close_jpegs(tmp_path: Path) -> None:
    from pipeline.dataset import load_faces

    prepared = write_tiny_prepared(tmp_path / "faces.npz")
    proc = run("pack", "--faces", str(prepared), "--out", str(tmp_path / "bundle"), "--no-wheels")
    assert proc.returncode == 0, proc.stderr[-3000:]
    faces = load_script().unpack(tmp_path / "bundle" / "faces.npz")
    original = load_faces(prepared)
    kept = np.isin(original.split, ["train", "val"])
    assert list(faces.split) == list(original.split[kept])  # no test face travels
    assert faces.images.shape == original.images[kept].shape
    error = np.abs(faces.images.astype(int) - original.images[kept]).mean()
    assert 0 < error < 3  # lossy, but by a few grey levels at quality 95


def test_pins_for_the_wheels_come_from_constraints() -> None:
    script = load_script()
    keras_pin = script.pinned("keras")
    assert keras_pin.startswith("keras==") and "+" not in keras_pin
    assert script.pinned("no-such-package") == "no-such-package"
    # every wheel the device needs is pinned, so the bundle matches what CI tested; a name that
    # dropped out of constraints.txt would be fetched at whatever version is newest
    for name in [*script.WHEELS, *script.SOURCE_ONLY]:
        assert "==" in script.pinned(name), f"{name} is not pinned in constraints.txt"


def test_cpu_run_under_jax_trains_times_and_scores(tmp_path: Path) -> None:
    pytest.importorskip("jax")
    from pipeline import perceptual

    # 32 px: the smallest faces the default's LPIPS term takes; its weights travel in the bundle
    prepared = write_tiny_prepared(tmp_path / "prepared" / "faces.npz", size=32)
    weights = tmp_path / "lpips.npz"
    perceptual.save_weights(perceptual.read_checkpoint(random_sdist(tmp_path)), weights)
    packed = run(
        "pack",
        "--faces",
        str(prepared),
        "--out",
        str(tmp_path),
        "--no-wheels",
        "--lpips",
        str(weights),
    )
    assert packed.returncode == 0 and (tmp_path / "alexnet.npz").exists(), packed.stderr[-3000:]
    out = tmp_path / "out"
    proc = train_under_jax(tmp_path / "faces.npz", out, 2, "8,32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| jax: 1 x cpu | jax | 8 |" in proc.stdout
    for batch, rate in ((8, 5e-4 * (8 / 64) ** 0.5), (32, 5e-4 * (32 / 64) ** 0.5)):
        timing = json.loads((out / f"b{batch}" / "timing.json").read_text())
        assert timing["backend"] == "jax" and timing["batch_size"] == batch
        assert timing["learning_rate"] == pytest.approx(rate)
        assert [r["epoch"] for r in timing["history"]] == [1, 2]
        assert all(r["perceptual"] > 0 for r in timing["history"])  # LPIPS ran under JAX
        assert timing["img_per_s"] > 0 and timing["epoch_s"] > 0
        card = json.loads((out / f"b{batch}" / "vae.json").read_text())
        assert card["latent_dim"] == 4 and card["likelihood"] == "gaussian"
        assert np.isfinite(card["log_sigma"])

    proc = run(
        "score",
        "--runs",
        str(out),
        "--faces",
        str(prepared),
        "evaluate.n_samples=12",
        "evaluate.kid_subsets=5",
        "evaluate.kid_subset_size=8",
        "evaluate.importance_samples=2",
        "evaluate.attributes=[Top]",
        f"evaluate.cache_dir={tmp_path / 'cache'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = json.loads((out / "scores.json").read_text())
    assert [s["batch_size"] for s in scores] == [32, 8]  # folders in name order: b32, b8
    for s in scores:
        assert np.isfinite(s["fid"]) and np.isfinite(s["val_fid"]) and s["sampler"] == "gmm"
        assert (out / f"b{s['batch_size']}" / "evaluation" / "samples_t1.png").exists()
        # the run folder now reads like models/: its mixture is what picture.py samples from
        from pipeline.artifacts import load_local

        assert load_local(out / f"b{s['batch_size']}").mixture is not None


def test_critic_and_kl_warmup_follow_the_schedule_under_jax(tmp_path: Path) -> None:
    """The GPU check trains a config as the pipeline does: the critic joins at
    train.adversarial_start_epoch (before it, its hinge loss and pull are exactly 0), and β warms
    up over train.kl_warmup_epochs. Without the schedule the critic ran from the first step."""
    pytest.importorskip("jax")
    prepared = write_tiny_prepared(tmp_path / "prepared" / "faces.npz", size=16)
    packed = run("pack", "--faces", str(prepared), "--out", str(tmp_path), "--no-wheels")
    assert packed.returncode == 0, packed.stderr[-3000:]
    out = tmp_path / "out"
    proc = train_under_jax(
        tmp_path / "faces.npz",
        out,
        3,
        "8",
        "model.perceptual_weight=0",
        "model.adversarial_weight=5",
        "model.critic_widths=[8,16]",
        "train.adversarial_start_epoch=1",
        "train.kl_warmup_epochs=3",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = json.loads((out / "b8" / "timing.json").read_text())["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[0]["critic"] == 0 and history[0]["adversarial"] == 0
    assert all(r["critic"] > 0 for r in history[1:])  # the hinge loss, once the critic is on
    # the loss is reconstruction + β·KL before the critic joins: β is a third of model.beta
    first = history[0]
    assert first["loss"] == pytest.approx(first["reconstruction"] + first["kl"] / 3, rel=1e-3)
