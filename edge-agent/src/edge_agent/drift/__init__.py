"""Drift monitoring: baselines from training, windows and detectors on the device."""
