from __future__ import annotations

import numpy as np

from pipeline.networks import build_model
from tests.test_model import model_cfg


def test_seed_matches_the_notebook() -> None:
    encoder, decoder = build_model(model_cfg())
    assert encoder.count_params() == 34_100_416
    assert decoder.count_params() == 2_169_795
    shapes = [tuple(layer.output.shape[1:]) for layer in encoder.layers[1:]]
    assert shapes[:4] == [(32, 32, 32), (16, 16, 64), (16384,), (2048,)]
    assert [tuple(layer.output.shape[1:]) for layer in decoder.layers[1:]] == [
        (16384,),
        (16, 16, 64),
        (32, 32, 64),
        (64, 64, 32),
        (64, 64, 3),
    ]


def test_conv_model_shapes_follow_config() -> None:
    encoder, decoder = build_model(model_cfg(name="conv", latent_dim=16, widths=[8, 16, 32]))
    z_mean, z_log_var = encoder(np.zeros((2, 64, 64, 3), np.float32))
    assert z_mean.shape == (2, 16) and z_log_var.shape == (2, 16)
    assert decoder(np.zeros((2, 16), np.float32)).shape == (2, 64, 64, 3)
