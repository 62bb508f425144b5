"""FLOP counts: what the speed benchmarks divide their step time by."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline.flops import forward_flops, training_flops
from pipeline.networks import build_model
from tests.conftest import load_benchmark
from tests.test_model import model_cfg


def test_dense_and_conv_flops_follow_the_formula() -> None:
    x = inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(x)  # 4x4x4 out
    x = keras.layers.Conv2DTranspose(2, 4, strides=2, padding="same")(x)  # 4x4x4 in
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(5)(x)
    model = keras.Model(inputs, out)
    conv = 2 * 4 * 4 * 9 * 3 * 4
    transposed = 2 * 4 * 4 * 16 * 4 * 2
    dense = 2 * (8 * 8 * 2) * 5
    assert forward_flops(model) == conv + transposed + dense


def test_decoder_res_blocks_add_depth_where_asked_and_count_flops() -> None:
    plain = build_model(model_cfg(name="conv", latent_dim=16, widths=[8, 16, 32]))
    deeper = build_model(
        model_cfg(name="conv", latent_dim=16, widths=[8, 16, 32], decoder_res_blocks=[0, 1, 2])
    )
    adds = [
        layer.output.shape[1:] for layer in deeper[1].layers if isinstance(layer, keras.layers.Add)
    ]
    assert adds == [(32, 32, 16), (64, 64, 8), (64, 64, 8)]  # none at 16 px, 1 at 32, 2 at 64
    assert deeper[1](np.zeros((2, 16), np.float32)).shape == (2, 64, 64, 3)
    # a 3x3 conv of C→C channels at H×W costs 2·H·W·9·C² per forward pass, 3× that in training
    extra = 3 * 2 * 9 * (32 * 32 * 16 * 16 + 2 * 64 * 64 * 8 * 8)
    assert training_flops(*deeper) - training_flops(*plain) == extra
    # the seed model's big Dense dominates: 2·16384·2048 of its forward FLOPs
    seed = build_model(model_cfg())
    assert training_flops(*seed) > 3 * 2 * 16384 * 2048


def test_resize_upsampling_replaces_the_transposed_conv_where_asked_and_counts_flops() -> None:
    widths = [8, 16, 32]
    plain = build_model(model_cfg(name="conv", latent_dim=16, widths=widths))
    resized = build_model(
        model_cfg(
            name="conv",
            latent_dim=16,
            widths=widths,
            decoder_upsample=["transposed", "transposed", "resize"],
        )
    )
    ups = [layer for layer in resized[1].layers if isinstance(layer, keras.layers.UpSampling2D)]
    assert [layer.output.shape[1:] for layer in ups] == [(64, 64, 16)]  # only the last stage
    transposed = [
        layer for layer in resized[1].layers if isinstance(layer, keras.layers.Conv2DTranspose)
    ]
    assert [layer.output.shape[1:] for layer in transposed] == [(16, 16, 32), (32, 32, 16)]
    assert resized[1](np.zeros((2, 16), np.float32)).shape == (2, 64, 64, 3)
    # at 64 px, 16 → 8 channels: a 3x3 conv costs 2·64·64·9·16·8 per forward pass where the 4x4
    # stride-2 transposed conv costs 2·32·32·16·16·8 (each input pixel's 16 taps), 3× in training
    extra = 3 * 2 * (64 * 64 * 9 * 16 * 8 - 32 * 32 * 16 * 16 * 8)
    assert training_flops(*resized) - training_flops(*plain) == extra


def test_the_perceptual_term_costs_three_alexnet_passes() -> None:
    from pipeline.flops import perceptual_training_flops

    # 64 px: conv0 15x15 (11x11x3 → 64), pool 7x7, conv1 7x7 (5x5x64 → 192), pool 3x3, then
    # three 3x3 convs (192 → 384 → 256 → 256) and a 1x1 head per layer
    convs = 2 * (
        15 * 15 * 121 * 3 * 64 + 7 * 7 * 25 * 64 * 192 + 9 * 9 * (192 * 384 + 384 * 256 + 256 * 256)
    )
    heads = 2 * (15 * 15 * 64 + 7 * 7 * 192 + 9 * (384 + 256 + 256))
    assert perceptual_training_flops(64) == 3 * (convs + heads)


def test_the_critic_costs_three_passes_of_its_convs_and_the_default_stays_within_twice() -> None:
    from pipeline.flops import critic_training_flops, perceptual_training_flops
    from pipeline.networks import build_conv, build_critic

    # 64 px, widths 32/64/128: 4x4 strided convs to 32, 16, 8 px, then a 3x3 conv to one logit
    forward = 2 * (
        32 * 32 * 16 * 3 * 32 + 16 * 16 * 16 * 32 * 64 + 8 * 8 * 16 * 64 * 128 + 8 * 8 * 9 * 128
    )
    critic = build_critic([32, 64, 128], 64)
    assert critic.output.shape[1:] == (8, 8, 1)  # one logit per 8x8-px patch
    assert critic_training_flops(critic) == 3 * 3 * forward
    # the budget: at most twice the plain default's training FLOPs per image
    plain = training_flops(*build_conv(128, [32, 64, 128]))
    assert plain + perceptual_training_flops(64) + critic_training_flops(critic) <= 2 * plain


def test_a_critic_on_samples_adds_one_decoder_pass_and_stays_within_twice_over_the_run() -> None:
    from pipeline.flops import (
        critic_training_flops,
        perceptual_training_flops,
        sample_decoding_flops,
    )
    from pipeline.networks import build_conv, build_critic

    encoder, decoder = build_conv(128, [32, 64, 128])
    assert sample_decoding_flops(decoder) == 3 * forward_flops(decoder)
    plain = training_flops(encoder, decoder)
    lpips = plain + perceptual_training_flops(64)
    with_critic = lpips + critic_training_flops(build_critic([32, 64, 128], 64))
    on_samples = with_critic + sample_decoding_flops(decoder)
    assert on_samples > 2 * plain  # while the critic is on, more than twice ...
    # ... but the critic is on for the last 20 of 50 epochs: within twice, per image of the run
    assert (30 * lpips + 20 * on_samples) / 50 <= 2 * plain


def run_cfg(*overrides: str):
    from pipeline.config import compose_config

    return compose_config(list(overrides))


def test_a_run_counts_each_epoch_at_its_phase_cost() -> None:
    from pipeline.flops import (
        critic_training_flops,
        perceptual_training_flops,
        run_flops,
    )
    from pipeline.networks import build_conv, build_critic

    lpips = training_flops(*build_conv(128, [32, 64, 128])) + perceptual_training_flops(64)
    critic = critic_training_flops(build_critic([32, 64, 128], 64))

    default = run_flops(run_cfg(), 64)  # the default: LPIPS, no critic, 50 epochs
    assert (default["epochs"], default["critic_epochs"]) == (50, 0)
    assert default["critic_step_gflop"] == default["step_gflop"] == lpips / 1e9
    assert default["run_gflop"] == 50 * lpips / 1e9

    late = run_flops(
        run_cfg("model.adversarial_weight=100", "train.adversarial_start_epoch=30"), 64
    )
    assert late["critic_epochs"] == 20
    assert late["critic_step_gflop"] == (lpips + critic) / 1e9
    assert late["run_gflop"] == pytest.approx((30 * lpips + 20 * (lpips + critic)) / 1e9)

    # a longer schedule pays for every epoch; a critic that starts after the last never trains
    longer = run_flops(
        run_cfg(
            "train.epochs=65", "model.adversarial_weight=100", "train.adversarial_start_epoch=45"
        ),
        64,
    )
    assert longer["run_gflop"] == pytest.approx((45 * lpips + 20 * (lpips + critic)) / 1e9)
    never = run_flops(
        run_cfg("model.adversarial_weight=100", "train.adversarial_start_epoch=60"), 64
    )
    assert never["critic_epochs"] == 0 and never["run_gflop"] == default["run_gflop"]


def flop_budget(monkeypatch: pytest.MonkeyPatch, *argv: str) -> None:
    module = load_benchmark("flop_budget")
    monkeypatch.setattr(sys, "argv", ["flop_budget.py", *argv])
    module.main()


def test_flop_budget_judges_the_whole_run_against_twice_the_plain_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # counting needs no LPIPS weights file (a clean clone has none)
    critic = ["model.adversarial_weight=100", f"model.perceptual_weights={tmp_path / 'none.npz'}"]
    out = tmp_path / "budget.json"
    flop_budget(monkeypatch, *critic, "train.adversarial_start_epoch=30", "--json", str(out))
    figures = json.loads(out.read_text())
    assert figures["baseline_run_gflop"] == pytest.approx(50 * figures["baseline_step_gflop"])
    assert figures["ratio"] == pytest.approx(figures["run_gflop"] / figures["baseline_run_gflop"])
    assert 1 < figures["ratio"] <= 2 and figures["within_budget"]
    assert "within issue 20's 2×" in capsys.readouterr().out

    # 20 more epochs at the same cost per step cross the budget
    flop_budget(monkeypatch, *critic, "train.epochs=70", "train.adversarial_start_epoch=50")
    assert "OVER issue 20's 2×" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.epoch=65", "train.epoch"),
        ("model.decoder_res_blocks=-1", "model.decoder_res_blocks"),
    ],
)
def test_flop_budget_names_a_bad_override_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, override: str, named: str
) -> None:
    out = tmp_path / "budget.json"
    with pytest.raises(SystemExit) as stop:
        flop_budget(monkeypatch, override, "--json", str(out))
    assert str(stop.value).startswith("flop_budget:") and named in str(stop.value)
    assert not out.exists()
