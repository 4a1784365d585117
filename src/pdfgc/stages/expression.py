"""Stage 3: expression disentanglement and the final generator.

The expression code is E_exp's output averaged over a K-frame window (the average washes
out lip motion); the decorrelation term keeps speech out of it, and [ours, an extension]
``pose_decorrelation`` the pose and eye codes. The new generator G renders the centre frame
from [appearance | audio mouth | expression | eye | pose], the eye and pose codes from the
centre frame, the mouth code from its audio.
"""

from __future__ import annotations

import math
from itertools import islice

import torch

from pdfgc.networks.generator import MOTION_CODES
from pdfgc.stages.base import Batch, StageModule, _info
from pdfgc.stages.distributed import gather

CODE_FIT_RIDGE = 1e-3  # ridge penalty (times the sample count) of the codes -> f_mot fit


def fit_code_map(codes: torch.Tensor, features: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The affine map ``features ~ codes @ m + b`` by ridge least squares: codes (N, C),
    features (N, F) -> m (C, F), b (F,) and the share of the features' variance it explains."""
    x, y = codes.double(), features.double()
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc + CODE_FIT_RIDGE * len(x) * torch.eye(x.shape[1], dtype=x.dtype)
    m = torch.linalg.solve(gram, xc.T @ yc)
    explained = 1 - float(((yc - xc @ m) ** 2).sum() / (yc**2).sum().clamp_min(1e-12))
    return m, y_mean - x_mean @ m, explained


def map_code_columns(source_columns: torch.Tensor, source_inputs: int, own_inputs: int,
                     m: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns and bias change of an equalised-lr projection of ``own_inputs`` inputs whose
    code inputs c give what the source projection (``source_inputs`` inputs, feature columns
    ``source_columns`` (out, F)) gave for the features ``c @ m + b``: (out, C), (out,)."""
    scale = 1 / math.sqrt(source_inputs)  # the source's run-time weight scale
    columns = source_columns.double() @ m.T * scale * math.sqrt(own_inputs)
    return columns, source_columns.double() @ b * scale


class ExpressionStage(StageModule):
    """G, E_exp (and whatever else the config leaves trainable) on self-reconstruction.

    Args:
        code_init_batches: [ours] with ``init_map`` from G0, before the first step: fit the
            affine map from the codes [mouth | emotion | eye | pose] to f_mot on this many
            training batches, and start G's code columns of every style projection as G0's
            f_mot columns through it, so G starts rendering the codes the way G0 renders f_mot
            (0: those columns keep their random initialisation).
        **kwargs: see :class:`StageModule`.
    """

    swappable = MOTION_CODES

    def __init__(self, *args, code_init_batches: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.code_init_batches = code_init_batches

    def encode(self, batch: Batch) -> tuple[dict, dict, dict]:
        """The appearance, the motion encoder's outputs over the window {name: (B, K, D)},
        and the style codes G renders from (appearance first)."""
        window = batch["window"]  # (B, K, 3, S, S)
        b, k = window.shape[:2]
        appearance = self.nets.appearance(batch["source"])
        motion = {name: code.unflatten(0, (b, k))  # (B, K, D)
                  for name, code in self.nets.motion(window.flatten(0, 1)).items()}
        centre = k // 2
        codes = {"appearance": appearance["vector"],
                 "mouth": self.nets.audio(batch["mel"])["mouth"],
                 "emotion": motion["emotion"].mean(1),
                 "eye": motion["eye"][:, centre],
                 "pose": motion["pose"][:, centre]}
        return appearance, motion, codes

    def on_fit_start(self) -> None:
        """Map G's code columns from G0's f_mot columns (``code_init_batches``), on a fresh
        start only."""
        if not (self.code_init_batches and self.init_columns and self.trainer.ckpt_path is None):
            return
        codes, features = [], []
        loader = self.trainer.datamodule.train_dataloader()
        with self.evaluating(), torch.no_grad():
            for batch in islice(loader, self.code_init_batches):
                batch = self.transfer_batch_to_device(batch, self.device, 0)
                _, motion, style = self.encode(batch)
                codes.append(torch.cat([v for k, v in style.items() if k != "appearance"], 1))
                features.append(motion["feature"][:, motion["feature"].shape[1] // 2])
        codes, features = gather([torch.cat(codes), torch.cat(features)])  # every process's
        m, b, explained = fit_code_map(codes.cpu(), features.cpu())  # batches: one map
        own = self.nets.state_dict()
        for key, source in self.init_columns.items():
            weight = own[key]
            columns, bias = map_code_columns(source.cpu(), self.appearance_dim + source.shape[1],
                                             weight.shape[1], m, b)
            weight[:, self.appearance_dim:] = columns.to(weight)
            own[key.removesuffix("weight") + "bias"].add_(bias.to(weight))
        _info(f"{self.stage_name}: G's code columns start as G0's f_mot columns through a map "
              f"fitted on {len(codes)} samples (explains {explained:.2f} of f_mot's "
              f"variance)")

    def render(self, batch: Batch) -> dict:
        appearance, motion, codes = self.encode(batch)
        centre = batch["window"].shape[1] // 2
        out = {"codes": codes, "map": appearance["map"], "video_mouth": motion["mouth"][:, centre],
               "fake": self.synthesize(codes, appearance["map"])}
        if self.has_term("decorrelation"):
            b, k = batch["window"].shape[:2]
            with torch.no_grad():  # the reference side: speech content of the same window
                audio = self.nets.audio(batch["window_mel"].flatten(0, 1))["feature"]
            out["window_audio"] = audio.unflatten(0, (b, k)).mean(1)
        return out

    def losses(self, batch: Batch, out: dict) -> dict[str, torch.Tensor]:
        losses = self.image_losses(batch, out["fake"])
        if self.has_term("lip"):
            losses["lip"] = self.term("lip", out["video_mouth"], out["codes"]["mouth"])
        if self.has_term("decorrelation"):
            losses["decorrelation"] = self.term("decorrelation", out["codes"]["emotion"],
                                                out["window_audio"])
        if self.has_term("pose_decorrelation"):
            codes = out["codes"]
            losses["pose_decorrelation"] = self.term(
                "pose_decorrelation", {"emotion": codes["emotion"]},
                {"pose": codes["pose"], "eye": codes["eye"]})
        return losses
