"""What this machine can do, and how much of it the default training step uses.

    python benchmarks/machine.py                 # about 2 minutes on 2 cores
    python benchmarks/machine.py --steps 8 --batch 16 --inception 20   # a quick look

Prints, for the machine it runs on: the CPU (lscpu model, AVX2, AVX-512, AMX, cores), a measured
FP32 matrix-multiply peak (NumPy SGEMM, GFLOP/s), the default model's training step (pipeline.model's
`compiled_vae`, the conf/ defaults resolved for this device, without the LPIPS term: the network
and likelihood the peer has) in img/s and GFLOP/s as a fraction of that peak, whether TensorFlow ran
its oneDNN kernels (pipeline/__init__.py asks for them; TF_ENABLE_ONEDNN_OPTS=0 runs the Eigen ones
to compare; ONEDNN_MAX_CPU_ISA=AVX2 makes oneDNN act as on an AVX2-only CPU), the same network and
loss in PyTorch (the peer) as a ratio, and the FID Inception network's img/s as `pipeline.metrics`
runs it (rebuilt with folded batch norms, traced, frozen, channels-last) against the plain
TorchScript.
Random 64x64 batches, a warm-up, then --rounds timed rounds (the median counts). One JSON line at
the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import pipeline  # noqa: E402, F401  (sets TensorFlow's oneDNN flag before anything imports it)


def cpu() -> dict:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in flags.splitlines() if "model name" in line),
        platform.processor() or platform.machine(),
    )
    return {
        "cpu": model,
        "avx2": "avx2" in flags,
        "avx512": "avx512f" in flags,
        "amx": "amx_tile" in flags,
        "cores": os.cpu_count(),
    }


def sgemm_peak(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of the best of `repeats` float32 n x n matrix products."""
    a, b = (np.random.default_rng(i).standard_normal((n, n), dtype=np.float32) for i in (0, 1))
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def keras_step(batch: int, steps: int, rounds: int) -> tuple[float, int, bool]:
    """Median img/s over `rounds` of the project's compiled training step with conf/'s defaults,
    its FLOPs/image and whether TensorFlow ran oneDNN kernels; the perceptual term is left out (the
    PyTorch peer has none; flops.perceptual_training_flops counts what it adds)."""
    from hydra import compose, initialize_config_dir

    from pipeline.device import onednn_enabled, resolve_device_settings, set_numerics
    from pipeline.flops import training_flops
    from pipeline.model import compiled_vae

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", [f"train.batch_size={batch}", "model.perceptual_weight=0"])
    cfg = resolve_device_settings(cfg)
    set_numerics(cfg)
    vae = compiled_vae(cfg, 64, steps_per_epoch=steps)
    spe = int(cfg.train.steps_per_execution)
    x = np.random.default_rng(0).random((batch * spe * max(1, steps // spe), 64, 64, 3), np.float32)
    vae.fit(x[: batch * spe], batch_size=batch, epochs=1, verbose=0)  # compile
    seconds = np.median(
        [_timed(lambda: vae.fit(x, batch_size=batch, epochs=1, verbose=0)) for _ in range(rounds)]
    )
    return len(x) / seconds, training_flops(vae.encoder, vae.decoder), onednn_enabled()


def torch_step(batch: int, steps: int, rounds: int) -> float:
    """img/s of the same network (conv widths 32/64/128, SiLU, latent 128, Gaussian likelihood
    with one learned σ, Adam) in PyTorch on this CPU: the peer the Keras step is compared with."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    w, latent = (32, 64, 128), 128
    enc = nn.Sequential(
        nn.Conv2d(3, w[0], 4, 2, 1), nn.SiLU(), nn.Conv2d(w[0], w[1], 4, 2, 1), nn.SiLU(),
        nn.Conv2d(w[1], w[2], 4, 2, 1), nn.SiLU(), nn.Flatten(), nn.Linear(8 * 8 * w[2], 2 * latent),
    )  # fmt: skip
    dec = nn.Sequential(
        nn.Linear(latent, 8 * 8 * w[2]), nn.SiLU(), nn.Unflatten(1, (w[2], 8, 8)),
        nn.ConvTranspose2d(w[2], w[2], 4, 2, 1), nn.SiLU(), nn.ConvTranspose2d(w[2], w[1], 4, 2, 1),
        nn.SiLU(), nn.ConvTranspose2d(w[1], w[0], 4, 2, 1), nn.SiLU(),
        nn.Conv2d(w[0], 3, 3, 1, 1), nn.Sigmoid(),
    )  # fmt: skip
    log_sigma = nn.Parameter(torch.tensor(-1.0))
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters(), log_sigma], lr=5e-4)
    x = torch.rand(batch, 3, 64, 64)

    def step() -> None:
        mu, log_var = enc(x).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
        x_hat = dec(z)
        s = torch.clamp(log_sigma, min=float(np.log(0.04)))
        nll = (0.5 * ((x - x_hat) / s.exp()) ** 2 + s).sum((1, 2, 3)).mean()
        kl = -0.5 * (1 + log_var - mu**2 - log_var.exp()).sum(1).mean()
        opt.zero_grad()
        (nll + kl).backward()
        opt.step()

    for _ in range(3):
        step()
    seconds = np.median([_timed(lambda: [step() for _ in range(steps)]) for _ in range(rounds)])
    return batch * steps / seconds


def inception(images: int) -> dict:
    import torch

    from pipeline import metrics

    faces = np.random.default_rng(0).integers(0, 256, (images, 64, 64, 3), dtype=np.uint8)
    metrics.inception_features(faces[:10])
    ours = images / _timed(lambda: metrics.inception_features(faces))
    plain = torch.jit.load(str(metrics.fid_network_path()), map_location="cpu").eval()
    x = torch.rand(10, 3, 299, 299) * 2 - 1
    with torch.no_grad():
        plain(x)
        t = _timed(lambda: [plain(x) for _ in range(max(1, images // 10))])
    return {"inception_img_s": ours, "inception_plain_img_s": 10 * max(1, images // 10) / t}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; the median counts")
    parser.add_argument("--inception", type=int, default=100, help="faces for the FID network")
    args = parser.parse_args()
    report = {**cpu(), "sgemm_gflop_s": sgemm_peak()}
    img_s, flops, onednn = keras_step(args.batch, args.steps, args.rounds)
    report |= {
        "tf_onednn": onednn,
        "train_img_s": img_s,
        "train_gflop_per_img": flops / 1e9,
        "train_gflop_s": img_s * flops / 1e9,
    }
    report["fraction_of_sgemm"] = report["train_gflop_s"] / report["sgemm_gflop_s"]
    report["torch_img_s"] = torch_step(args.batch, args.steps, args.rounds)
    report["keras_over_torch"] = img_s / report["torch_img_s"]
    if args.inception:
        report |= inception(args.inception)
    for key, value in report.items():
        print(f"{key:24s} {value:.3g}" if isinstance(value, float) else f"{key:24s} {value}")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in report.items()}))


if __name__ == "__main__":
    main()
