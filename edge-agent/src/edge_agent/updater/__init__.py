"""Model delivery on the device: plan, download, verify, smoke, swap, probation, rollback."""
