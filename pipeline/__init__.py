"""lfw-vae: a DVC + Hydra + MLflow pipeline that trains a Keras 3 VAE on LFW faces."""
