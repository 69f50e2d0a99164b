"""Governance: audit reports, explanations, slice metrics, the labelling queue and triggers."""
