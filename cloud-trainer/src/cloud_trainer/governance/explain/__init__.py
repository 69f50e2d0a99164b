"""Explanations: permutation importance, local perturbation and image occlusion."""
