#!/usr/bin/env bash
# The GPU check, in one command on a lent accelerator (the device tool), from the repository root:
#   here:   .venv/bin/python benchmarks/gpu_check.py pack          (makes .gpu/: faces + wheels)
#   there:  bash benchmarks/gpu_check.sh                            (device run, carry [".gpu"])
#   here:   .venv/bin/python benchmarks/gpu_check.py score --runs <the fetched $OUT>
# The accelerator machine has JAX, PyTorch and NumPy but no TensorFlow or Keras, and no internet:
# the wheels in .gpu/wheels are unzipped onto PYTHONPATH (a wheel is a zip of an installed
# package), and Keras runs on JAX. EPOCHS and BATCHES override the defaults (50; 64 and 1024).
set -euo pipefail
cd "$(dirname "$0")/.."
site=$(mktemp -d)
for wheel in .gpu/wheels/*.whl; do python3 -m zipfile -e "$wheel" "$site"; done
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" KERAS_BACKEND=jax
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
python3 benchmarks/gpu_check.py train --data .gpu/faces.npz --epochs "${EPOCHS:-50}" \
    --batch-sizes "${BATCHES:-64,1024}" --out "${OUT:-gpu-out}" "$@"
