"""Preprocessing of real talking videos (VoxCeleb2 or any folder) into a pdfgc dataset:
landmarks (by :mod:`pdfgc.face.landmarks`), alignment to the PC-AVS template (``align``),
per-frame labels (``labels``) and the sharded, resumable runner (``runner``;
``python preprocess.py``).
"""
