"""Training jobs over a dataset: codebooks (``fit-codebook``) and VQ-VAE (``train-vq``)."""

from .codebook import fit_codebook
from .vqvae import TrainVQConfig, train_vq

__all__ = ["TrainVQConfig", "fit_codebook", "train_vq"]
