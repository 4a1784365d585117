"""Datasets: the synthetic talking heads, preprocessing of real videos, and the DataModule."""
