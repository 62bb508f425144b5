"""The product as one MLflow model: decoder + ex-post sampler + card (+ the encoder, for evaluation
and attribute edits), turning {n, temperature, seed} into faces. It is the one model a training
run logs (`generator`), registered under `tracking.register_model`, loaded by
`pipeline.generate generate.model=models:/lfw-vae@champion` (or a run id) and served as is:

    mlflow models serve -m models:/lfw-vae@champion --env-manager local -p 5001
    curl -X POST 127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
         -d '{"dataframe_records": [{"n": 4, "temperature": 1.0, "seed": 0}]}'

The answer's `predictions` are uint8 faces, N×H×W×3. The package's own code travels inside the
model (code_paths), so a server needs Keras and MLflow, not this repository.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import ColSpec, Schema, TensorSpec

log = logging.getLogger(__name__)
NAME = "generator"
MAX_FACES = 4096  # per request: a typo'd n should not tie up a server for an hour
DESCRIPTION = (
    "LFW face generator (lfw-vae): a VAE decoder with its ex-post latent sampler. Input rows "
    "{n, temperature (default 1), seed (default 0)}; output n uint8 faces (N×H×W×3) per row, "
    "sampled from the mixture fitted to the training faces' codes (the prior for models without "
    "one). Metrics: the training run's validation and test figures (val_fid ranks versions)."
)


def signature(image_size: int) -> ModelSignature:
    return ModelSignature(
        inputs=Schema(
            [
                ColSpec("long", "n"),
                ColSpec("double", "temperature", required=False),
                # optional integers arrive as floats when a row leaves them out (NaN)
                ColSpec("double", "seed", required=False),
            ]
        ),
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, image_size, image_size, 3))]),
    )


def _bad(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _requests(model_input: Any) -> list[tuple[int, float, int]]:
    """(n, temperature, seed) per input row, each checked: one clear error per bad value."""
    frame = pd.DataFrame(model_input) if not isinstance(model_input, pd.DataFrame) else model_input
    if "n" not in frame.columns or frame.empty:
        raise _bad("each request row needs n (how many faces), e.g. {'n': 16, 'seed': 0}")
    rows = []
    for row in frame.to_dict("records"):
        n = row["n"]
        t = 1.0 if pd.isna(row.get("temperature", np.nan)) else float(row["temperature"])
        seed = 0 if pd.isna(row.get("seed", np.nan)) else row["seed"]
        if not float(n).is_integer() or not 0 < n <= MAX_FACES:
            raise _bad(f"n={n!r} must be a whole number from 1 to {MAX_FACES}")
        if not 0 < t < np.inf:
            raise _bad(f"temperature={t!r} must be a positive number")
        if not float(seed).is_integer() or seed < 0:
            raise _bad(f"seed={seed!r} must be a non-negative whole number")
        rows.append((int(n), t, int(seed)))
    return rows


class FaceGenerator(mlflow.pyfunc.PythonModel):
    """Loads decoder.keras and encoder.keras (safe mode), sampler.npz and vae.json from the
    model's artifacts."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from pipeline import sampler
        from pipeline.artifacts import load_keras_model, read_card

        files = context.artifacts
        self.decoder = load_keras_model(files["decoder"], "decoder")
        # generators logged before the encoder travelled with them have none
        self.encoder = load_keras_model(files["encoder"], "encoder") if "encoder" in files else None
        self.card = read_card(Path(files["card"]).read_text(), "vae.json")
        self.mixture = sampler.load(files["sampler"]) if "sampler" in files else None

    @property
    def sampler_name(self) -> str:
        return "prior" if self.mixture is None else "gmm"

    def faces(self, n: int, temperature: float = 1.0, seed: int = 0) -> np.ndarray:
        """n faces as floats in [0, 1]: the same codes `pipeline.generate` draws for this seed."""
        from pipeline.latent import sample_faces

        latent = int(self.card["latent_dim"])
        return sample_faces(self.decoder, n, latent, temperature, seed, mixture=self.mixture)

    # no type hints: MLflow would read them as a second, conflicting input schema
    def predict(self, context, model_input, params=None):
        from pipeline.images import to_uint8

        return np.concatenate([to_uint8(self.faces(*r)) for r in _requests(model_input)])


def log_generator(
    models_dir: Path, image_size: int, register_as: str | None
) -> mlflow.models.model.ModelInfo:
    """The generator into the active run, from the files just saved in models_dir; registered
    under `register_as` when given. Pip requirements are explicit: no dependency inference."""
    import keras

    import pipeline

    artifacts = {
        name: str(models_dir / file)
        for name, file in [
            ("decoder", "decoder.keras"),
            ("encoder", "encoder.keras"),
            ("card", "vae.json"),
        ]
    }
    if (models_dir / "sampler.npz").exists():
        artifacts["sampler"] = str(models_dir / "sampler.npz")
    info = mlflow.pyfunc.log_model(
        name=NAME,
        python_model=FaceGenerator(),
        artifacts=artifacts,
        code_paths=[str(Path(pipeline.__file__).parent)],
        signature=signature(image_size),
        input_example=pd.DataFrame({"n": [2], "temperature": [1.0], "seed": [0]}),
        pip_requirements=requirements(keras),
        registered_model_name=register_as or None,
    )
    if register_as and info.registered_model_version is not None:
        client = mlflow.MlflowClient()
        client.update_registered_model(register_as, DESCRIPTION)
        client.update_model_version(
            register_as,
            str(info.registered_model_version),
            f"Run {mlflow.active_run().info.run_id}; {json.dumps(card_summary(models_dir))}",
        )
    return info


def card_summary(models_dir: Path) -> dict:
    card = json.loads((models_dir / "vae.json").read_text())
    keys = ("model", "latent_dim", "likelihood", "epochs", "image_size")
    return {k: card[k] for k in keys if k in card}


def requirements(keras_module: Any) -> list[str]:
    """What loading the generator needs, at the versions that made it."""
    from importlib.metadata import version

    backend = keras_module.backend.backend()
    backend_dist = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    names = ["mlflow", "keras", backend_dist, "numpy", "pandas"]
    found = []
    for name in names:
        try:
            found.append(f"{name}=={version(name)}")
        except Exception:  # a backend installed under another distribution name (tensorflow-cpu)
            found.append(name)
    return found


def load(ref: str, tracking_cfg: Any, what: str = "generate.model") -> FaceGenerator | None:
    """The logged generator behind a models:/ URI, a run id or runs:/<id>/generator (also
    runs:/<id>/decoder and /encoder: the run's one model holds both networks). None for a .keras
    file, and for runs and registered models from before the generator existed (bare Keras
    networks, which `artifacts.load_network` loads)."""
    from pipeline import tracking
    from pipeline.artifacts import RUN_ID, from_mlflow, require_run

    if RUN_ID.match(ref):
        ref = f"runs:/{ref}/{NAME}"
    if ref.startswith("runs:/"):
        run_id, _, part = ref.removeprefix("runs:/").partition("/")
        require_run(run_id, tracking_cfg, what)
        if part.strip("/") in ("decoder", "encoder", NAME):
            if logged_model_id(run_id) is None:
                return None
            ref = f"runs:/{run_id}/{NAME}"
    elif not ref.startswith("models:/"):
        return None
    tracking.setup(tracking_cfg)
    model = from_mlflow(mlflow.pyfunc.load_model, ref, tracking_cfg)
    try:
        inner = model.unwrap_python_model()
    except MlflowException:  # another flavour (a Keras decoder): not a python model
        return None
    return inner if isinstance(inner, FaceGenerator) else None


CHAMPION = "champion"


def promote(register_as: str, run_id: str, val_fid: float | None) -> str | None:
    """Move the `champion` alias to this run's registered generator when its validation FID beats
    the champion's (or there is none yet); tags the version with the figure. Returns the version."""
    client = mlflow.MlflowClient()
    found = client.search_model_versions(f"name = '{register_as}' and run_id = '{run_id}'")
    if not found:
        return None
    version = str(max(int(v.version) for v in found))
    if val_fid is not None:
        client.set_model_version_tag(register_as, version, "val_fid", f"{val_fid:.4f}")
    try:
        current = client.get_model_version_by_alias(register_as, CHAMPION)
        best = float(current.tags.get("val_fid", "inf"))
    except MlflowException:  # no champion yet
        current, best = None, math.inf
    if current is None or (val_fid is not None and val_fid < best):
        client.set_registered_model_alias(register_as, CHAMPION, version)
        log.info(
            "models:/%s@%s is now version %s (val_fid %s)", register_as, CHAMPION, version, val_fid
        )
    return version


def logged_model_id(run_id: str) -> str | None:
    """The id of the run's logged generator (MLflow 3 logged model), to link metrics to it."""
    run = mlflow.get_run(run_id)
    found = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{NAME}'",
        output_format="list",
    )
    return found[0].model_id if found else None
