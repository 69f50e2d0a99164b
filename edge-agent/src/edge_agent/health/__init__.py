"""Sensor health on the device: tests that tell a broken station sensor from weather."""
