"""Helpers for a reproducible study of bilateral data-poisoning effects in diffusion models."""

__version__ = "0.1.0"
