"""lfw-vae: a DVC + Hydra + MLflow pipeline that trains a Keras 3 VAE on LFW faces."""

import os
import platform

# TensorFlow turns its oneDNN kernels on by default only on x86 CPUs with AVX512_VNNI, AVX512_BF16
# or AMX; on AVX2-only CPUs (Zen 1-3, older Xeons) it falls back to its Eigen kernels, which train
# this project's networks several times slower (README, Performance). The flag is read once, when
# TensorFlow is first imported, so it is set here, before any stage imports Keras; it reaches the
# stages' subprocesses (dvc repro, sweeps, Ray workers) through the environment. An explicit
# TF_ENABLE_ONEDNN_OPTS=0 still turns it off. Left alone off x86, where TensorFlow decides itself.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
