"""The known factors of the synthetic talking heads: identities and per-frame motion tracks.

Every factor is drawn from its own random stream, so the factors of a clip are independent
of each other. ``FACTOR_NAMES`` lists the columns of the ``factors`` label array:

=====================  ==========================================================
name                   meaning (per frame)
=====================  ==========================================================
yaw, pitch, roll       head rotation in degrees: yaw > 0 turns the nose to the image
                       right, pitch > 0 tips it down, roll > 0 turns the head clockwise
tx, ty                 head shift in face units (1 unit = 100 px of a 224 image, two
                       eye distances), > 0 to the right / down
tz                     head scale change: the head is drawn (1 + tz) times larger
mouth_open             inner-lip opening in [0, 1], a function of the audio
mouth_round            lip rounding in [0, 1], a function of the audio (0 in silence)
blink                  eyelid closure in [0, 1] (1 = closed): a slow lid drift of
                       0..``LID_DRIFT`` on every frame, closed the rest of the way by
                       blinks (about ``BLINK_RATE`` a second, peaks of ``BLINK_PEAK``)
gaze_x, gaze_y         pupil offset in [-1, 1], > 0 to the image right / down (at 1 the
                       iris centre is 70 % of the eye's half-width from the middle)
emotion_intensity      strength of the emotion: in [``EMOTION_FLOOR``, 1] for the four
                       emotions, 0 for neutral
emotion_<category>     one-hot emotion category, one column per ``EMOTIONS`` entry
=====================  ==========================================================

The eye and emotion ranges are sized for a 64 px frame: every frame's blink and gaze move
landmarks by more than a trained 64 px landmark trunk's error (about 0.8 px).
:func:`random_factors` draws single frames over the same ranges, each factor independently.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pdfgc.features import FPS

EMOTIONS = ("neutral", "happy", "sad", "angry", "surprised")
POSE_NAMES = ("yaw", "pitch", "roll", "tx", "ty", "tz")
FACTOR_NAMES = (
    *POSE_NAMES,
    "mouth_open",
    "mouth_round",
    "blink",
    "gaze_x",
    "gaze_y",
    "emotion_intensity",
    *(f"emotion_{name}" for name in EMOTIONS),
)
POSE_LIMITS = {"yaw": 25.0, "pitch": 20.0, "roll": 15.0, "tx": 0.08, "ty": 0.05, "tz": 0.05}
BLINK_RATE = 1.0  # blinks per second
BLINK_PEAK = (0.9, 1.0)  # closure at the height of a blink
LID_DRIFT = 0.3  # largest closure of the slow lid drift
EMOTION_FLOOR = 0.6  # least intensity of an emotion other than neutral
HAIR_STYLES = ("short", "fringe", "side_part", "receding")

# Random-stream tags: the streams of one seed are independent of each other.
IDENTITY_STREAM = 1
SKIN_TONES = np.array(
    [(250, 222, 200), (238, 196, 165), (222, 170, 132), (196, 136, 98), (150, 96, 64),
     (104, 66, 44)], dtype=np.float64)
HAIR_COLOURS = np.array(
    [(28, 24, 24), (62, 42, 30), (112, 76, 46), (200, 165, 105), (150, 72, 38), (165, 162, 158)],
    dtype=np.float64)
IRIS_COLOURS = np.array(
    [(96, 58, 30), (58, 36, 22), (64, 112, 170), (78, 126, 82), (128, 98, 52), (118, 128, 140)],
    dtype=np.float64)


@dataclass(frozen=True)
class Identity:
    """The fixed look of one synthetic person (colours are RGB in 0..255)."""

    index: int
    face_width: float      # x scale of the head outline
    face_length: float     # y scale of the lower face (chin height)
    jaw_square: float      # superellipse exponent of the jaw: 2 oval .. 3.2 square
    eye_size: float        # scale of the eye openings
    nose_length: float
    mouth_width: float
    lip_thickness: float
    brow_thickness: float
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    hair_style: str        # one of HAIR_STYLES
    long_hair: bool
    iris: tuple[float, float, float]
    background: tuple[tuple[float, float, float], tuple[float, float, float]]
    background_angle: float  # direction of the background gradient, radians
    clothes: tuple[float, float, float]


def make_identity(index: int, seed: int = 0) -> Identity:
    """The identity number ``index`` of the dataset with ``seed`` (same inputs, same person)."""
    rng = np.random.default_rng([seed, IDENTITY_STREAM, index])
    return Identity(
        index=index,
        face_width=float(rng.uniform(0.92, 1.08)),
        face_length=float(rng.uniform(0.94, 1.06)),
        jaw_square=float(rng.uniform(2.0, 3.2)),
        eye_size=float(rng.uniform(0.9, 1.1)),
        nose_length=float(rng.uniform(0.9, 1.1)),
        mouth_width=float(rng.uniform(0.9, 1.1)),
        lip_thickness=float(rng.uniform(0.8, 1.2)),
        brow_thickness=float(rng.uniform(0.8, 1.3)),
        skin=_palette(rng, SKIN_TONES, jitter=6.0),
        hair=_pick(rng, HAIR_COLOURS, jitter=10.0),
        hair_style=HAIR_STYLES[int(rng.integers(len(HAIR_STYLES)))],
        long_hair=bool(rng.random() < 0.4),
        iris=_pick(rng, IRIS_COLOURS, jitter=12.0),
        background=(_background_colour(rng), _background_colour(rng)),
        background_angle=float(rng.uniform(0.0, 2.0 * np.pi)),
        clothes=_background_colour(rng),
    )


def _palette(rng: np.random.Generator, colours: np.ndarray, jitter: float) -> tuple:
    """A random blend of two neighbouring palette colours, plus a little noise."""
    position = rng.uniform(0.0, len(colours) - 1)
    low = int(np.floor(position))
    high = min(low + 1, len(colours) - 1)
    colour = colours[low] + (position - low) * (colours[high] - colours[low])
    return tuple(float(c) for c in np.clip(colour + rng.normal(0.0, jitter, 3), 0, 255))


def _pick(rng: np.random.Generator, colours: np.ndarray, jitter: float) -> tuple:
    """One palette colour, plus a little noise."""
    colour = np.clip(colours[rng.integers(len(colours))] + rng.normal(0.0, jitter, 3), 0, 255)
    return tuple(float(c) for c in colour)


def _background_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    """A muted random colour (any hue, mid saturation and value)."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.15, 0.6), rng.uniform(0.35, 0.9))
    return tuple(255.0 * c for c in rgb)


def neutral_factors() -> dict[str, float]:
    """Every factor at rest: frontal pose, closed mouth, open eyes, centred gaze, neutral."""
    factors = dict.fromkeys(FACTOR_NAMES, 0.0)
    factors["emotion_neutral"] = 1.0
    return factors


def frame_factors(factors: np.ndarray, index: int) -> dict[str, float]:
    """Row ``index`` of a (N, F) factor array as a name -> value dict."""
    return dict(zip(FACTOR_NAMES, (float(v) for v in factors[index]), strict=True))


def motion_tracks(seed_sequences: Mapping[str, np.random.SeedSequence], n_frames: int
                  ) -> dict[str, np.ndarray]:
    """Pose, blink, gaze and emotion tracks of one clip, each from its own random stream.

    ``seed_sequences`` has the keys pose, blink, gaze and emotion. Returns arrays of shape
    (n_frames,) keyed by the factor names (all of ``FACTOR_NAMES`` but the mouth).
    """
    rng = {name: np.random.default_rng(seq) for name, seq in seed_sequences.items()}
    t = np.arange(n_frames) / FPS
    tracks = {name: _smooth_track(rng["pose"], t, limit) for name, limit in POSE_LIMITS.items()}
    tracks["blink"] = _blink_track(rng["blink"], t)
    tracks["gaze_x"], tracks["gaze_y"] = _gaze_track(rng["gaze"], t)
    tracks.update(_emotion_track(rng["emotion"], t))
    return tracks


def factor_array(tracks: Mapping[str, np.ndarray]) -> np.ndarray:
    """Stack per-factor tracks into the (N, F) float32 array ordered as ``FACTOR_NAMES``."""
    return np.stack([tracks[name] for name in FACTOR_NAMES], axis=1).astype(np.float32)


def random_factors(rng: np.random.Generator) -> dict[str, float]:
    """One frame's factors, each drawn independently over the range the clips use: pose
    uniform within its limits, mouth and gaze uniform, blink half the time within the lid
    drift and otherwise anywhere in [0, 1], a uniform emotion at an intensity uniform in
    [``EMOTION_FLOOR``, 1] (0 when neutral)."""
    factors = {name: rng.uniform(-limit, limit) for name, limit in POSE_LIMITS.items()}
    factors["mouth_open"], factors["mouth_round"] = rng.uniform(0.0, 1.0, 2)
    factors["blink"] = rng.uniform(0.0, LID_DRIFT if rng.random() < 0.5 else 1.0)
    factors["gaze_x"], factors["gaze_y"] = rng.uniform(-1.0, 1.0, 2)
    emotion = EMOTIONS[int(rng.integers(len(EMOTIONS)))]
    neutral = emotion == "neutral"
    factors["emotion_intensity"] = 0.0 if neutral else rng.uniform(EMOTION_FLOOR, 1.0)
    factors.update({f"emotion_{name}": float(name == emotion) for name in EMOTIONS})
    return {name: float(value) for name, value in factors.items()}


def _smooth_track(rng: np.random.Generator, t: np.ndarray, limit: float) -> np.ndarray:
    """A random offset plus three low-frequency sinusoids, never beyond +-limit."""
    offset = rng.uniform(-0.5, 0.5) * limit
    weights = rng.dirichlet(np.ones(3)) * rng.uniform(0.3, 1.0) * 0.5 * limit
    freqs = rng.uniform(0.1, 0.6, 3)  # Hz
    phases = rng.uniform(0, 2 * np.pi, 3)
    waves = np.sin(2 * np.pi * freqs[:, None] * t[None] + phases[:, None])  # (3, N)
    return offset + weights @ waves


def _blink_track(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A slow lid drift in [0, LID_DRIFT] (a 0.1-0.4 Hz wave of random depth), closed the
    rest of the way by blinks at Poisson times: each a smooth 0 -> peak -> 0 bump of
    0.16-0.36 s. The blink is 1 - (1 - drift) (1 - bump), so it stays in [0, 1]."""
    depth = rng.uniform(0.1, 1.0) * LID_DRIFT
    freq, phase = rng.uniform(0.1, 0.4), rng.uniform(0.0, 2 * np.pi)  # Hz, radians
    drift = depth * (0.5 - 0.5 * np.cos(2 * np.pi * freq * t + phase))  # (N,) in [0, depth]
    closure = np.zeros_like(t)
    start = rng.exponential(1.0 / BLINK_RATE) - 0.3
    while start < t[-1] + 0.3:
        length, peak = rng.uniform(0.16, 0.36), rng.uniform(*BLINK_PEAK)
        bump = np.clip((t - start) / length, 0.0, 1.0)
        closure = np.maximum(closure, peak * (0.5 - 0.5 * np.cos(2 * np.pi * bump)))
        start += length + rng.exponential(1.0 / BLINK_RATE)
    return 1.0 - (1.0 - drift) * (1.0 - closure)


def _gaze_track(rng: np.random.Generator, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fixations of 0.3-1.2 s joined by smooth 0.08 s saccades; targets uniform in [-1, 1]."""
    gaze = np.zeros((len(t), 2))
    target = rng.uniform(-1.0, 1.0, 2)
    gaze[:] = target
    switch = rng.uniform(0.0, 1.0)
    while switch < t[-1]:
        new = rng.uniform(-1.0, 1.0, 2)
        ramp = np.clip((t - switch) / 0.08, 0.0, 1.0)
        ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep
        gaze += ramp[:, None] * (new - target)
        target = new
        switch += rng.uniform(0.3, 1.2)
    return gaze[:, 0], gaze[:, 1]


def _emotion_track(rng: np.random.Generator, t: np.ndarray) -> dict[str, np.ndarray]:
    """One category per clip; its intensity drifts slowly around a level in
    [EMOTION_FLOOR, 1], never below the floor."""
    category = EMOTIONS[int(rng.integers(len(EMOTIONS)))]
    level, drift = rng.uniform(EMOTION_FLOOR, 1.0), rng.uniform(-0.15, 0.15)
    phase, freq = rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.2)
    intensity = np.clip(level + drift * np.sin(2 * np.pi * freq * t + phase), EMOTION_FLOOR, 1.0)
    if category == "neutral":
        intensity = np.zeros_like(t)
    tracks = {f"emotion_{name}": np.full_like(t, name == category, dtype=np.float64)
              for name in EMOTIONS}
    tracks["emotion_intensity"] = intensity
    return tracks
