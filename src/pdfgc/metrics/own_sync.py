"""A lip-sync score from the model's own lip space: no outside weights.

The stage-2 lip contrastive loss puts the motion encoder's mouth code of a frame (``E_lip``)
and the audio encoder's mouth code of its mel window (``E_aud``) in one space. Per clip, the
mouth codes of the rendered frames and the audio codes that drove them are L2-normalised and
searched for the best offset over +-15 frames exactly as LSE is (:func:`sync_score`):
``own_sync/d`` is the smallest mean distance, ``own_sync/c`` the confidence (median minus
smallest). The same on the real frames (``_real``) shows what the encoders make of real
speech, and so what a good score is for this checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pdfgc.metrics.registry import Metric, MetricContext, MetricResult, register
from pdfgc.metrics.render import ClipSample
from pdfgc.metrics.syncnet import MAX_OFFSET, SYNC_MODES, SyncTally, sync_score


@register
class OwnSync(Metric):
    """``own_sync/c``, ``/d``, ``/offset`` (self-reconstructions) and ``/c_real``,
    ``/d_real``, ``/c_cross``, ``/d_cross``, averaged over clips."""

    name = "own_sync"
    stream = "clips"

    def __init__(self, ctx: MetricContext, max_offset: int = MAX_OFFSET):
        super().__init__(ctx)
        self.max_offset = max_offset
        self.tally = SyncTally()

    def update(self, clip: ClipSample) -> None:
        audio = F.normalize(clip.audio_codes.float(), dim=1)
        motion = clip.renderer.model.nets.motion
        for mode, key in SYNC_MODES.items():
            frames = clip.images(key)
            if frames is None:
                continue
            with torch.no_grad():
                mouth = clip.renderer.chunked(lambda x: motion(x)["mouth"], frames)
            video = F.normalize(mouth.float(), dim=1)
            self.tally.add(mode, sync_score(video, audio, self.max_offset))

    def compute(self) -> MetricResult:
        return MetricResult(self.tally.results(self.name))
