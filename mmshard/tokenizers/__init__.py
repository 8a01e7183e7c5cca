"""Pure computations on decoded media: audio features, codebooks and units, keyframes,
clip plans, NaViT packing plans, patch VQ and a VQ-VAE (resize policies: mmshard.media.resize).

Importing the package registers every built-in tokenizer in :data:`TOKENIZERS`.
"""

from . import audio_features, clips, codebook, keyframes, packing, patch_vq, plugin, units, vqvae
from .audio_features import (
                             FbankConfig,
                             KaldiFbank,
                             KaldiMfcc,
                             MfccConfig,
                             SpectralConfig,
                             SpectralFeatures,
                             WhisperMel,
                             WhisperMelConfig,
                             kaldi_fbank,
                             kaldi_mfcc,
                             log_mel_spectrogram,
                             mel_filterbank,
                             spectral_features,
)
from .base import TOKENIZERS, Tokenizer, build_tokenizer
from .clips import Clip, FixedWindowConfig, FixedWindowPlanner, SceneClipConfig, SceneClipPlanner
from .codebook import Codebook, CodebookConfig
from .keyframes import KeyframeDetector, KeyframesConfig, detect_keyframes
from .packing import PackedSequence, PackingPlan, plan_packing
from .patch_vq import PatchVQConfig, PatchVQTokenizer
from .plugin import PluginTokenizer, load_tokenizer
from .units import UnitsConfig, UnitTokenizer
from .vqvae import VQVAEConfig, VQVAETokenizer, load_vqvae, save_vqvae, train_vqvae

__all__ = [
    "Clip", "Codebook", "CodebookConfig", "FbankConfig", "FixedWindowConfig",
    "FixedWindowPlanner", "KaldiFbank", "KaldiMfcc", "KeyframeDetector", "KeyframesConfig",
    "MfccConfig", "PackedSequence", "PackingPlan",
    "PatchVQConfig", "PatchVQTokenizer", "PluginTokenizer",
    "SceneClipConfig", "SceneClipPlanner",
    "SpectralConfig", "SpectralFeatures", "TOKENIZERS", "Tokenizer", "UnitTokenizer",
    "UnitsConfig", "VQVAEConfig", "VQVAETokenizer", "WhisperMel", "WhisperMelConfig",
    "audio_features", "build_tokenizer", "clips", "codebook", "detect_keyframes",
    "kaldi_fbank", "kaldi_mfcc", "keyframes", "load_tokenizer", "load_vqvae",
    "log_mel_spectrogram", "mel_filterbank", "packing", "patch_vq", "plan_packing", "plugin",
    "save_vqvae", "spectral_features", "train_vqvae", "units",
    "vqvae",
]
