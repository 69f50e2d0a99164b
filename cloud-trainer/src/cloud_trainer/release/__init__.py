"""Releases: signed manifests, the artefact server and staged rollouts."""
