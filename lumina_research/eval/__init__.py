"""Evaluations that measure the paper's claims on our own models (ShapesBench, V2A sync)."""
