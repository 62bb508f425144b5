"""benchmarks/ema_raw.py: the last raw weights of a train.ema run become a model of their own."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import mlflow
import numpy as np
import pytest

from pipeline.artifacts import load_network
from tests.conftest import TINY_MODEL, load_benchmark, run_training


def ema_raw(monkeypatch: pytest.MonkeyPatch, *argv: str) -> None:
    module = load_benchmark("ema_raw")
    monkeypatch.setattr(sys, "argv", ["ema_raw.py", *argv])
    module.main()


def tensor_sums(arrays: list[np.ndarray]) -> np.ndarray:
    return np.sort([float(np.asarray(a, np.float64).sum()) for a in arrays])


def checkpoint_decoder(models: Path) -> list[np.ndarray]:
    """The decoder's weights as the last checkpoint holds them (the raw weights, not the average)."""
    [folder] = [d for d in (models / "checkpoints").iterdir() if d.is_dir()]
    found: list[np.ndarray] = []
    with h5py.File(folder / "model.weights.h5", "r") as f:
        f["decoder"].visititems(
            lambda _, obj: found.append(obj[()]) if isinstance(obj, h5py.Dataset) else None
        )
    return found


def test_the_copy_saves_the_last_raw_weights_not_their_average(
    tiny_cfg, tiny_prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = ["train.ema=0.5", "train.epochs=2"]
    cfg = tiny_cfg(*overrides)
    source = run_training(cfg, tiny_prepared, tmp_path / "ema")
    raw = checkpoint_decoder(source.models_dir)
    average = load_network(str(source.models_dir / "decoder.keras"), cfg.tracking).get_weights()
    assert not np.allclose(tensor_sums(raw), tensor_sums(average))  # else the test proves nothing

    out = tmp_path / "raw" / "models"
    tracking = [
        f"tracking.tracking_uri={cfg.tracking.tracking_uri}",
        f"tracking.artifact_location={cfg.tracking.artifact_location}",
    ]
    ema_raw(monkeypatch, str(source.models_dir), str(out), *TINY_MODEL, *tracking, *overrides)
    copy = run_training(cfg, tiny_prepared, tmp_path / "raw")

    assert copy.resumed_from == 2 and copy.run_id != source.run_id
    saved = load_network(str(out / "decoder.keras"), cfg.tracking).get_weights()
    np.testing.assert_allclose(tensor_sums(saved), tensor_sums(raw), rtol=1e-6)
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    run = mlflow.MlflowClient().get_run(copy.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.ema"] == "0.5"
    assert run.data.tags["ema_raw_weights_of"] == source.run_id

    with pytest.raises(SystemExit, match="exists"):
        ema_raw(monkeypatch, str(source.models_dir), str(out), *TINY_MODEL, *tracking, *overrides)
    # a store that does not hold the EMA run: one line naming the fix, and nothing written
    elsewhere = [f"tracking.tracking_uri=sqlite:///{tmp_path}/other.db"]
    with pytest.raises(SystemExit, match=r"is not in .*tracking"):
        ema_raw(
            monkeypatch,
            str(source.models_dir),
            str(tmp_path / "x"),
            *TINY_MODEL,
            *elsewhere,
            *overrides,
        )
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit, match="holds 0 checkpoints"):
        ema_raw(monkeypatch, str(tmp_path), str(tmp_path / "y"), *TINY_MODEL, *tracking, *overrides)
