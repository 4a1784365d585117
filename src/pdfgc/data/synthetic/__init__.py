"""The built-in synthetic talking heads: procedurally drawn faces with known per-frame factors.

``python -m pdfgc.data.synthetic ROOT`` writes a dataset (manifest, mp4s with speech-like
audio, label files with the true factors) and a contact sheet; see ``generate``.
"""

from pdfgc.data.synthetic.face import NUM_LANDMARKS, render_frame
from pdfgc.data.synthetic.factors import (
    EMOTIONS,
    FACTOR_NAMES,
    Identity,
    make_identity,
    neutral_factors,
    random_factors,
)
from pdfgc.data.synthetic.generate import (
    contact_sheet,
    ensure_dataset,
    generate_dataset,
    render_clip,
)
from pdfgc.data.synthetic.speech import mouth_from_audio, synthesize_speech

__all__ = [
    "EMOTIONS",
    "FACTOR_NAMES",
    "Identity",
    "NUM_LANDMARKS",
    "contact_sheet",
    "ensure_dataset",
    "generate_dataset",
    "make_identity",
    "mouth_from_audio",
    "neutral_factors",
    "random_factors",
    "render_clip",
    "render_frame",
    "synthesize_speech",
]
