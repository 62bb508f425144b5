"""The encoder/decoder architectures: the notebook's (`seed`) and the strided-conv family
(`conv`, which `sigma_vae` uses), as plain functional Keras models that save and load on their own.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

MODELS = ("seed", "conv")  # architectures (model.arch); model.name is the config's own name
# how a decoder stage doubles the resolution (model.decoder_upsample): a strided 4x4 transposed
# conv, or a nearest-neighbour resize followed by a 3x3 conv: every output pixel then sees the
# same kind of neighbourhood, so the decoder has no built-in period-2 (checkerboard) pattern to
# fall into (Odena et al., "Deconvolution and Checkerboard Artifacts", Distill 2016)
UPSAMPLINGS = ("transposed", "resize")


FLOAT32_LAYERS = ("latent", "output")


def _dtypes(float32_layers: tuple[str, ...] | list[str]) -> tuple[str | None, str | None]:
    """The dtype of the latent-path layers and of the output layer: "float32" keeps them out of a
    mixed-precision policy (a no-op under float32), None leaves them to the global policy."""
    return (
        "float32" if "latent" in float32_layers else None,
        "float32" if "output" in float32_layers else None,
    )


def build_seed(
    latent_dim: int, image_size: int = 64, float32_layers: tuple[str, ...] | list[str] = ()
) -> tuple[keras.Model, keras.Model]:
    """The original notebook's architecture, layer for layer (34,100,416 + 2,169,795 parameters at 128).

    `float32_layers` ("latent", "output") only sets those layers' compute dtype (see train.py)."""
    latent_dtype, output_dtype = _dtypes(float32_layers)
    x = inputs = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(16 * latent_dim, activation="relu")(x)
    z_mean = layers.Dense(latent_dim, name="z_mean", dtype=latent_dtype)(x)
    z_log_var = layers.Dense(latent_dim, name="z_log_var", dtype=latent_dtype)(x)
    encoder = keras.Model(inputs, [z_mean, z_log_var], name="encoder")

    side = image_size // 4
    z = latent = keras.Input((latent_dim,), name="z")
    z = layers.Dense(side * side * 64, activation="relu", dtype=latent_dtype)(z)
    z = layers.Reshape((side, side, 64))(z)
    z = layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu")(z)
    z = layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu")(z)
    outputs = layers.Conv2DTranspose(
        3, 3, padding="same", activation="sigmoid", name="image", dtype=output_dtype
    )(z)
    return encoder, keras.Model(latent, outputs, name="decoder")


def _block(x: Any, width: int, conv: type, batch_norm: bool) -> Any:
    x = conv(width, 4, strides=2, padding="same", use_bias=not batch_norm)(x)
    return _activate(x, batch_norm)


def _resize_block(x: Any, width: int, batch_norm: bool) -> Any:
    x = layers.UpSampling2D(2, interpolation="nearest")(x)
    x = layers.Conv2D(width, 3, padding="same", use_bias=not batch_norm)(x)
    return _activate(x, batch_norm)


def _activate(x: Any, batch_norm: bool) -> Any:
    if batch_norm:
        x = layers.BatchNormalization()(x)
    return layers.Activation("silu")(x)


def _per_stage(value: Any, stages: int) -> list[Any]:
    """A decoder setting given once for all stages, or already one per stage, as a list."""
    return [value] * stages if isinstance(value, int | str) else list(value)


def _residual(x: Any, width: int) -> Any:
    """x + Conv3x3(SiLU-activated x): one more layer of detail at this resolution, and an identity
    path, so the added depth starts out as a no-op and cannot make the decoder worse to train."""
    return layers.Add()([x, layers.Activation("silu")(layers.Conv2D(width, 3, padding="same")(x))])


def build_conv(
    latent_dim: int,
    widths: list[int],
    image_size: int = 64,
    batch_norm: bool = False,
    hidden: int = 0,
    float32_layers: tuple[str, ...] | list[str] = (),
    decoder_res_blocks: int | list[int] = 0,
    decoder_upsample: str | list[str] = "transposed",
) -> tuple[keras.Model, keras.Model]:
    """Default model: strided 4x4 convs (SiLU) halving the image once per width, mirrored on the
    way up, with an optional dense hidden layer on each side of the latent and
    `decoder_res_blocks` residual 3x3 convs after the decoder's upsamplings (one count for all, or
    one per upsampling, smallest resolution first). `decoder_upsample` picks each upsampling's
    layer (UPSAMPLINGS; one for all, or one per upsampling, smallest resolution first).

    Far fewer parameters than `seed` (no 34 M-weight Dense) and more depth where the pixels are.
    """
    latent_dtype, output_dtype = _dtypes(float32_layers)
    x = inputs = keras.Input((image_size, image_size, 3), name="image")
    for width in widths:
        x = _block(x, width, layers.Conv2D, batch_norm)
    x = layers.Flatten()(x)
    if hidden:
        x = layers.Dense(hidden, activation="silu", dtype=latent_dtype)(x)
    z_mean = layers.Dense(latent_dim, name="z_mean", dtype=latent_dtype)(x)
    z_log_var = layers.Dense(latent_dim, name="z_log_var", dtype=latent_dtype)(x)
    encoder = keras.Model(inputs, [z_mean, z_log_var], name="encoder")

    side = image_size // 2 ** len(widths)
    z = latent = keras.Input((latent_dim,), name="z")
    if hidden:
        z = layers.Dense(hidden, activation="silu", dtype=latent_dtype)(z)
    z = layers.Dense(side * side * widths[-1], activation="silu", dtype=latent_dtype)(z)
    z = layers.Reshape((side, side, widths[-1]))(z)
    for width, blocks, upsampling in zip(
        reversed(widths),
        _per_stage(decoder_res_blocks, len(widths)),
        _per_stage(decoder_upsample, len(widths)),
        strict=True,
    ):
        if upsampling == "resize":
            z = _resize_block(z, width, batch_norm)
        else:
            z = _block(z, width, layers.Conv2DTranspose, batch_norm)
        for _ in range(blocks):
            z = _residual(z, width)
    outputs = layers.Conv2D(
        3, 3, padding="same", activation="sigmoid", name="image", dtype=output_dtype
    )(z)
    return encoder, keras.Model(latent, outputs, name="decoder")


# the critic's default: three halvings of a 64-px face, one logit per 8x8-px patch
CRITIC_WIDTHS = (32, 64, 128)


def build_critic(
    widths: list[int], image_size: int = 64, float32_layers: tuple[str, ...] | list[str] = ()
) -> keras.Model:
    """A PatchGAN critic (Isola et al. 2017; VQGAN's discriminator, smaller): strided 4x4 convs
    (LeakyReLU) halving the image once per width, then one 3x3 conv to a real-vs-decoded logit
    per patch. No normalisation layers, so its output on one face never depends on the others'.

    A patch critic judges local texture (skin, hair, the edges of eyes) rather than the whole
    face, which is where a pixel likelihood leaves the decoder's output blurred.
    """
    _, output_dtype = _dtypes(float32_layers)
    x = inputs = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Rescaling(2.0, offset=-1.0)(x)  # [0, 1] -> [-1, 1]
    for width in widths:
        x = layers.Conv2D(width, 4, strides=2, padding="same")(x)
        x = layers.LeakyReLU(0.2)(x)
    logits = layers.Conv2D(1, 3, padding="same", name="logits", dtype=output_dtype)(x)
    return keras.Model(inputs, logits, name="critic")


def build_model(
    cfg: Any, image_size: int = 64, float32_layers: tuple[str, ...] | list[str] = ()
) -> tuple[keras.Model, keras.Model]:
    """Encoder and decoder for a model config (checked beforehand: validate_model_config)."""
    if architecture(cfg) == "seed":
        return build_seed(cfg.latent_dim, image_size, float32_layers)
    return build_conv(
        cfg.latent_dim,
        list(cfg.widths),
        image_size,
        cfg.get("batch_norm", False),
        cfg.get("hidden", 0),
        float32_layers,
        cfg.get("decoder_res_blocks", 0),
        cfg.get("decoder_upsample", "transposed"),
    )


def architecture(cfg: Any) -> str:
    """Which builder a model config uses: `model.arch` (configs written before it existed named
    the architecture in `model.name`)."""
    return cfg.get("arch") or cfg.name
