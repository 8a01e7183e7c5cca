"""Decoding, probing and re-encoding of images, audio and video."""
