"""Reading and writing the outside world: audio, images, frame sources and mp4 output.

This package must not import torch.
"""

from pdfgc.media.audio import load_audio, write_wav
from pdfgc.media.video import (
    IMAGE_EXTENSIONS,
    FrameSource,
    VideoWriter,
    probe_video,
    read_image,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "FrameSource",
    "VideoWriter",
    "load_audio",
    "probe_video",
    "read_image",
    "write_wav",
]
