"""Where training runs and in what numerics: device detection, the precision policy, seeds and
data parallelism. The `auto` speed switches in conf/train are resolved here, per device."""

from __future__ import annotations

import contextlib
import copy
import logging
from pathlib import Path
from typing import Any

import keras
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def describe_device() -> str:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return f"tensorflow: {len(gpus)} GPU ({', '.join(g.name for g in gpus)})"
        return f"tensorflow: CPU, oneDNN {'on' if onednn_enabled() else 'off'}"
    if backend == "jax":
        import jax

        devices = jax.devices()
        return f"jax: {len(devices)} x {devices[0].device_kind}"
    return backend


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels in this process (pipeline/__init__.py asks for
    them on x86; TF_ENABLE_ONEDNN_OPTS=0 turns them off). False under other backends."""
    if keras.backend.backend() != "tensorflow":
        return False
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a private module: a TensorFlow without it cannot tell
        return False
    return bool(_pywrap_util_port.IsMklEnabled())


def cpu_has_bfloat16() -> bool:
    """AVX-512 BF16 or AMX: bfloat16 matmuls run at about twice the float32 rate (oneDNN)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def gpu_has_bfloat16() -> bool:
    """Ampere (compute capability 8.0) and newer have bfloat16 tensor cores."""
    if keras.backend.backend() == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        return bool(gpus) and float(getattr(gpus[0], "compute_capability", "0")) >= 8.0
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
        return details.get("compute_capability", (0, 0)) >= (8, 0)
    return False


def resolve_device_settings(cfg: DictConfig) -> DictConfig:
    """A copy of cfg with every `auto` speed switch replaced by what this device does best.

    The resolved values are what gets logged and fingerprinted, so a run says what it really did.
    - mixed_precision: bfloat16 where the hardware has fast bfloat16, else off. Weights, optimizer
      state, the latent path, the output layer and the loss stay float32 either way
      (train.float32_layers); benchmarks/ hold the measured speed and quality.
    - fused_adam: on under TensorFlow (one kernel per weight); JAX's XLA step fuses it anyway.
    - jit_compile: XLA on GPUs, off on CPUs.
    """
    cfg = copy.deepcopy(cfg)
    t = cfg.train
    if t.mixed_precision == "auto":
        on_gpu = gpu_count() > 0
        fast = (
            gpu_has_bfloat16()
            if on_gpu
            else (keras.backend.backend() == "tensorflow" and cpu_has_bfloat16())
        )
        t.mixed_precision = "bfloat16" if fast else False
    if t.fused_adam == "auto":
        t.fused_adam = keras.backend.backend() == "tensorflow"
    if t.jit_compile == "auto":  # XLA pays on GPUs; on CPU it measured slower (README)
        t.jit_compile = gpu_count() > 0
    return cfg


def gpu_count() -> int:
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if keras.backend.backend() == "jax":
        import jax

        return sum(d.platform == "gpu" for d in jax.devices())
    return 0


def distribution_scope() -> Any:
    """Data parallelism over every visible GPU; a no-op context on one device."""
    n = gpu_count()
    if n > 1 and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        log.info("data parallel over %d GPUs (MirroredStrategy)", n)
        return tf.distribute.MirroredStrategy().scope()
    if n > 1 and keras.backend.backend() == "jax":
        log.info("data parallel over %d devices (keras.distribution.DataParallel)", n)
        keras.distribution.set_distribution(keras.distribution.DataParallel())
    return contextlib.nullcontext()


def set_numerics(cfg: DictConfig) -> None:
    """Seeds, op determinism and the precision policy, from a clean Keras state (a sweep runs
    several jobs in one process)."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.train.seed)
    if cfg.train.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    policy = f"mixed_{cfg.train.mixed_precision}" if cfg.train.mixed_precision else "float32"
    keras.mixed_precision.set_global_policy(policy)
