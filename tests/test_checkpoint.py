from __future__ import annotations

from omegaconf import OmegaConf

from pipeline.checkpoint import fingerprint


def config(**model: object):
    return OmegaConf.create(
        {"model": {"name": "sigma_vae", "latent_dim": 128, **model}, "train": {"seed": 42}}
    )


def test_fingerprint_names_what_makes_two_trainings_the_same() -> None:
    base = fingerprint(config(), "data-1")
    assert fingerprint(config(), "data-1") == base
    assert fingerprint(config(latent_dim=64), "data-1") != base
    assert fingerprint(config(), "data-2") != base
    resumed = OmegaConf.merge(config(), {"train": {"resume": False}})
    assert fingerprint(resumed, "data-1") == base  # resume is how to run, not what is trained


def test_a_setting_added_later_at_its_neutral_value_keeps_old_checkpoints_resumable() -> None:
    """A run started before model.perceptual_weight existed resumes after it was added (at 0);
    a real LPIPS term is another training."""
    before = fingerprint(config(), "data-1")
    neutral = config(perceptual_weight=0.0, perceptual_weights="data/lpips/alexnet.npz")
    assert fingerprint(neutral, "data-1") == before
    lpips = config(perceptual_weight=1000.0, perceptual_weights="data/lpips/alexnet.npz")
    assert fingerprint(lpips, "data-1") != before
    # the critic's fakes: reconstructions is what every critic run before it trained on
    critic = fingerprint(config(adversarial_weight=100.0), "data-1")
    assert (
        fingerprint(config(adversarial_weight=100.0, critic_fakes="reconstructions"), "data-1")
        == critic
    )
    assert fingerprint(config(adversarial_weight=100.0, critic_fakes="samples"), "data-1") != critic
    assert fingerprint(config(critic_fakes="reconstructions"), "data-1") == before
    # transposed upsampling is what every decoder before model.decoder_upsample had
    assert fingerprint(config(decoder_upsample="transposed"), "data-1") == before
    assert fingerprint(config(decoder_upsample="resize"), "data-1") != before
    other_file = config(perceptual_weight=1000.0, perceptual_weights="elsewhere.npz")
    assert fingerprint(other_file, "data-1") != fingerprint(lpips, "data-1")
