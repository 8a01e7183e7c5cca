"""mmshard."""
