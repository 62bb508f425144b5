from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from pipeline.artifacts import load_network
from pipeline.errors import PipelineError
from pipeline.generate import generate
from tests.conftest import run_stage, tiny_overrides


def with_generate(cfg, **kw):
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    for k, v in kw.items():
        cfg.generate[k] = v
    return cfg


def test_generate_from_a_file_and_from_a_run_id_agree(trained_tiny: dict) -> None:
    cfg = trained_tiny["cfg"]
    from_file = load_network(str(trained_tiny["root"] / "models/decoder.keras"), cfg.tracking)
    from_run = load_network(trained_tiny["run_id"], cfg.tracking)
    a, b = generate(cfg, from_file), generate(cfg, from_run)
    assert a.shape == (5, 16, 16, 3)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    assert not np.allclose(a, generate(with_generate(cfg, seed=1), from_file))  # the seed matters
    cooler = generate(with_generate(cfg, temperature=0.01), from_file)
    # low temperature: faces near the mean face
    assert cooler.std(axis=0).mean() < a.std(axis=0).mean()


def test_each_sampler_from_a_folder_and_from_a_run_id(trained_tiny: dict) -> None:
    from pipeline.artifacts import mixture_for

    cfg = trained_tiny["cfg"]
    ref = str(trained_tiny["root"] / "models/decoder.keras")
    decoder = load_network(ref, cfg.tracking)
    from_folder = mixture_for(ref, cfg.tracking)
    from_run = mixture_for(trained_tiny["run_id"], cfg.tracking)
    assert from_folder is not None and from_run is not None
    np.testing.assert_array_equal(from_folder.means, from_run.means)
    gmm = generate(cfg, decoder, mixture=from_folder)
    np.testing.assert_allclose(gmm, generate(cfg, decoder, mixture=from_run), rtol=1e-6)
    prior = generate(with_generate(cfg, sampler="prior"), decoder)
    assert gmm.shape == prior.shape == (5, 16, 16, 3) and not np.allclose(gmm, prior)
    lines = generate(with_generate(cfg, mode="interpolate", n=2), decoder, mixture=from_folder)
    assert lines.shape == (2 * cfg.generate.steps, 16, 16, 3)
    with pytest.raises(PipelineError, match="sampler='vamp' is unknown"):
        generate(with_generate(cfg, sampler="vamp"), decoder)


def test_interpolate_and_attribute_modes(trained_tiny: dict) -> None:
    cfg = with_generate(trained_tiny["cfg"], n=2)
    decoder = load_network(str(trained_tiny["root"] / "models/decoder.keras"), cfg.tracking)
    encoder = load_network(
        str(trained_tiny["root"] / "models/encoder.keras"), cfg.tracking, part="encoder"
    )
    assert generate(with_generate(cfg, mode="interpolate", steps=6), decoder).shape == (
        12,
        16,
        16,
        3,
    )
    edits = generate(
        with_generate(cfg, mode="attribute", attribute="Red"),
        decoder,
        encoder,
        trained_tiny["prepared"],
    )
    assert edits.shape == (2 * 5, 16, 16, 3)
    with pytest.raises(PipelineError, match=r"unknown attribute.*'Smiling'.*valid names: Top, Red"):
        generate(
            with_generate(cfg, mode="attribute", attribute="Smiling"),
            decoder,
            encoder,
            trained_tiny["prepared"],
        )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("n", 0, "generate.n=0 must be a positive integer"),
        ("n", -3, "generate.n=-3"),
        ("mode", "dream", "generate.mode='dream' is unknown"),
        ("temperature", 0, "temperature=0 must be > 0"),
    ],
)
def test_bad_generate_settings(trained_tiny: dict, key: str, value: object, message: str) -> None:
    decoder = load_network(
        str(trained_tiny["root"] / "models/decoder.keras"), trained_tiny["cfg"].tracking
    )
    with pytest.raises(PipelineError, match=message):
        generate(with_generate(trained_tiny["cfg"], **{key: value}), decoder)


def test_generate_command_writes_pngs(trained_tiny: dict, tmp_path: Path) -> None:
    root = trained_tiny["root"]
    args = [
        *tiny_overrides(root),
        f"generate.model={trained_tiny['run_id']}",
        "generate.singles=true",
        f"generate.out={tmp_path}/out",
        f"hydra.run.dir={tmp_path}/hydra",
    ]
    proc = run_stage("pipeline.generate", args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "face_0000.png",
        "face_0001.png",
        "face_0002.png",
        "face_0003.png",
        "face_0004.png",
        "grid.png",
    ]
    with Image.open(tmp_path / "out/face_0000.png") as img:
        assert img.size == (32, 32)
    bad = run_stage("pipeline.generate", [*args[:-3], "generate.n=0"], tmp_path)
    assert bad.returncode == 1 and "generate.n=0 must be a positive integer" in bad.stderr
    assert "Traceback" not in bad.stderr
    # a decoder without its ex-post sampler: one line that says so, never the prior in silence
    import shutil

    (tmp_path / "lonely").mkdir()
    shutil.copy(root / "models" / "decoder.keras", tmp_path / "lonely" / "decoder.keras")
    lonely = run_stage(
        "pipeline.generate",
        [
            *tiny_overrides(root),
            f"generate.model={tmp_path}/lonely/decoder.keras",
            f"generate.out={tmp_path}/lonely-out",
            f"hydra.run.dir={tmp_path}/hydra",
        ],
        tmp_path,
    )
    assert lonely.returncode == 1 and "generate.sampler=prior" in lonely.stderr
    assert "Traceback" not in lonely.stderr and not (tmp_path / "lonely-out").exists()
