"""Checkpoints of a training in progress, and what may interrupt one.

A checkpoint (models/checkpoints/<fingerprint>/) holds the weights with the optimizer's slots, the
noise generator's state and the history, written atomically at each epoch's end; the fingerprint
says which config and data it belongs to. SIGTERM waits for a checkpoint write in progress.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from omegaconf import DictConfig, OmegaConf

from pipeline.atomic import atomic_dir, recover_dir
from pipeline.errors import PipelineError

# Settings added after checkpoints already existed, with the value that does nothing: left out of
# the fingerprint at that value, so a run started before the setting existed still resumes.
NEUTRAL = {
    "model": {
        "perceptual_weight": 0.0,
        "adversarial_weight": 0.0,
        "critic_fakes": "reconstructions",
        "decoder_upsample": "transposed",
    },
    "train": {"adversarial_start_epoch": 0, "weight_decay": 0.0},
}
# ... and settings that only matter beside another one (the LPIPS weights file with no LPIPS term)
ONLY_WITH = {
    "model": {
        "perceptual_weights": "perceptual_weight",
        "critic_widths": "adversarial_weight",
        "critic_fakes": "adversarial_weight",
    }
}


def fingerprint(cfg: DictConfig, data_version: str) -> str:
    """What makes two trainings the same: model and train settings (not resume) plus the data."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    settings["train"] = {k: v for k, v in settings["train"].items() if k != "resume"}
    for group, neutral in NEUTRAL.items():
        values = settings[group]
        for key, value in neutral.items():
            if key in values and values[key] == value:
                del values[key]
        for key, needs in ONLY_WITH.get(group, {}).items():
            if needs not in values:
                values.pop(key, None)
    blob = json.dumps(
        {"model": settings["model"], "train": settings["train"], "data": data_version},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Terminated(BaseException):  # like KeyboardInterrupt: a request to stop, not an error
    """SIGTERM arrived: training stops after any checkpoint write in progress has finished."""


class TerminationGuard:
    """SIGTERM (a spot instance reclaimed, `kill`, a scheduler's timeout) stops training at once,
    except while a checkpoint is being written: then it waits for the write to finish."""

    def __init__(self) -> None:
        self.writing = False
        self.pending: int | None = None
        self.previous: Any = None

    def __enter__(self) -> TerminationGuard:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)

    def handle(self, signum: int, frame: object) -> None:
        if self.writing:
            self.pending = signum
            return
        raise Terminated(f"stopped by signal {signum}")

    def writing_checkpoint(self) -> Any:
        guard = self

        class _Writing:
            def __enter__(self) -> None:
                guard.writing = True

            def __exit__(self, *exc: object) -> None:
                guard.writing = False
                if guard.pending is not None and exc[0] is None:
                    raise Terminated(
                        f"stopped by signal {guard.pending} after writing the checkpoint"
                    )

        return _Writing()


@dataclass
class Checkpoint:
    """models/checkpoints/<fingerprint>/: weights with optimizer slots, and the history so far."""

    folder: Path
    epoch: int = 0
    run_id: str | None = None
    history: list[dict] = field(default_factory=list)
    noise_state: list[int] | None = None

    def save(self, model: keras.Model) -> None:
        # a kill mid-write leaves the previous checkpoint whole
        with atomic_dir(self.folder) as tmp:
            model.save_weights(tmp / "model.weights.h5")  # Keras 3 stores the optimizer's slots too
            # the reparameterisation noise's RNG state is not a weight: keep it so a resume is exact
            noise = np.asarray(model.noise.state.numpy()).tolist()
            (tmp / "state.json").write_text(
                json.dumps(
                    {
                        "epoch": self.epoch,
                        "run_id": self.run_id,
                        "history": self.history,
                        "noise_state": noise,
                    }
                )
            )

    @classmethod
    def load(cls, folder: Path) -> Checkpoint | None:
        recover_dir(folder)  # a writer killed mid-swap left the previous checkpoint aside
        try:
            state = json.loads((folder / "state.json").read_text())
        except (OSError, ValueError):
            return None
        return cls(
            folder, state["epoch"], state["run_id"], state["history"], state.get("noise_state")
        )

    def restore(self, model: keras.Model) -> None:
        model.optimizer.build(model.trainable_variables)  # slots must exist to receive their values
        model.load_weights(self.folder / "model.weights.h5")
        if self.noise_state is not None:
            model.noise.state.assign(np.asarray(self.noise_state, dtype=model.noise.state.dtype))


@contextlib.contextmanager
def checkpoint_lock(folder: Path) -> Iterator[None]:
    """Hold `<folder>.lock` while training into `folder`. Two trainings of one config and data
    would overwrite each other's checkpoints (and one's clean-up of stale temp files would delete
    the other's write in progress), so the second stops with a message naming the first. The lock
    is the kernel's (flock): it goes when its process dies, so a killed run never leaves it held."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.parent / f"{folder.name}.lock"
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise PipelineError(
                f"{holder} is already training this config on this data (checkpoint {folder}): "
                "wait for it to finish, or stop it and rerun to resume from its checkpoint"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        yield
