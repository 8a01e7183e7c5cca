"""Training jobs over a dataset: codebooks (``fit-codebook``) and VQ-VAE (``train-vq``)."""

from .codebook import FitCodebookConfig, FitCodebookResult, fit_codebook
from .vqvae import TrainVQConfig, TrainVQResult, train_vq

__all__ = ["FitCodebookConfig", "FitCodebookResult", "TrainVQConfig", "TrainVQResult",
           "fit_codebook", "train_vq"]
