from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from omegaconf import DictConfig

from pipeline.config import compose_config
from tests.http_server import FileServer
from tests.lfw_fixtures import attributes_text, make_archive, make_lfw_tree

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def lfw_source(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small LFW-shaped tree, its .tgz and a matching attributes file (built once per session)."""
    base = tmp_path_factory.mktemp("lfw_source")
    keys = make_lfw_tree(base / "lfw-deepfunneled")
    archive = make_archive(base, base / "lfw-deepfunneled.tgz")
    attributes = base / "lfw_attributes.txt"
    attributes.write_text(attributes_text(keys), encoding="utf-8")
    return {
        "dir": base / "lfw-deepfunneled",
        "archive": archive,
        "attributes": attributes,
        "keys": keys,
    }


@pytest.fixture
def http_server():
    with FileServer() as server:
        yield server


@pytest.fixture
def data_cfg(lfw_source: dict) -> DictConfig:
    """conf/ composed for the small fixture data (no network, fast retries)."""
    cfg = compose_config(
        [
            f"data.download.sources=[{lfw_source['archive']}]",
            f"data.download.expected_images={len(lfw_source['keys'])}",
            "data.download.content_sha256=null",
            "data.download.backoff_s=0.01",
            "data.download.retries=2",
            "data.download.timeout_s=5",
            f"data.attributes_file={lfw_source['attributes']}",
            "data.expected_attributes=3",
            f"data.expected_attribute_rows={len(lfw_source['keys'])}",
            "data.prepare.split.train=0.6",
            "data.prepare.split.val=0.2",
            "data.prepare.split.test=0.2",
            "data.prepare.grid=4",
        ]
    )
    return cfg.data


def tree_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


TINY_MODEL = [
    "model=conv",
    "model.widths=[8,16]",
    "model.latent_dim=4",
    "train.batch_size=16",
    "train.epochs=3",
    "train.sample_every=2",
]  # speed switches stay at their defaults (8 steps per call: epochs of 4 steps end mid-group)


@pytest.fixture
def tiny_prepared(tmp_path: Path) -> Path:
    from tests.lfw_fixtures import write_tiny_prepared

    return write_tiny_prepared(tmp_path / "prepared" / "faces.npz")


@pytest.fixture
def tiny_cfg(tmp_path: Path):
    """A composed config for seconds-long trainings with an MLflow store inside tmp_path."""

    def make(*overrides: str) -> DictConfig:
        return compose_config(
            [
                *TINY_MODEL,
                f"tracking.tracking_uri=sqlite:///{tmp_path}/mlruns/mlflow.db",
                f"tracking.artifact_location={tmp_path}/mlruns/artifacts",
                f"paths.prepared={tmp_path}/prepared",
                f"paths.models={tmp_path}/models",
                f"paths.reports={tmp_path}/reports",
                *overrides,
            ]
        )

    return make


def tiny_overrides(root: Path) -> list[str]:
    return [
        *TINY_MODEL,
        f"tracking.tracking_uri=sqlite:///{root}/mlruns/mlflow.db",
        f"tracking.artifact_location={root}/mlruns/artifacts",
        f"paths.prepared={root}/prepared",
        f"paths.models={root}/models",
        f"paths.reports={root}/reports",
        "evaluate.n_samples=12",
        "evaluate.kid_subsets=5",
        "evaluate.kid_subset_size=8",
        "evaluate.importance_samples=4",
        "evaluate.attributes=[Top,Red]",
        "generate.n=5",
    ]


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny model trained once per session (2 epochs), for evaluate and generate tests."""
    from pipeline.checksums import file_sha256
    from pipeline.dataset import load_faces
    from pipeline.train import train
    from tests.lfw_fixtures import write_tiny_prepared

    root = tmp_path_factory.mktemp("trained")
    prepared = write_tiny_prepared(root / "prepared" / "faces.npz")
    cfg = compose_config([*tiny_overrides(root), "train.epochs=2"])
    result = train(
        cfg, load_faces(prepared), file_sha256(prepared), root / "models", root / "reports", "tiny"
    )
    return {"root": root, "cfg": cfg, "run_id": result.run_id, "prepared": prepared}


def run_training(cfg: DictConfig, prepared: Path, root: Path, name: str = "test"):
    """train() on a prepared file, with models and reports under `root`."""
    from pipeline.checksums import file_sha256
    from pipeline.dataset import load_faces
    from pipeline.train import train

    return train(
        cfg, load_faces(prepared), file_sha256(prepared), root / "models", root / "reports", name
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_stage(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` as a user runs it, output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=600, cwd=cwd
    )


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py as a module: the benchmarks are scripts, not a package."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
