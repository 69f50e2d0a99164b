"""Pretrained image backbones read from offline weight files."""
