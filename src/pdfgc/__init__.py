"""pdfgc: train, evaluate and run PD-FGC talking heads (CVPR 2023)."""

__version__ = "0.1.0"
