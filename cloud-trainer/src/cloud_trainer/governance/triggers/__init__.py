"""Retraining triggers: schedule, new labels and drift, each recorded as the cause on the run."""
