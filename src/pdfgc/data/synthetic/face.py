"""The renderer: a 3D facial layout posed, projected and drawn with OpenCV.

The face is built in canonical units: pixels of a 224 image, origin at the midpoint of the
eyes, x right, y down, z towards the camera. Every part (the landmarks, lids, iris, lips,
hair, ears ...) is a set of 3D points shaped by the identity and the frame's factors,
rotated about a pivot in the neck (yaw about y, pitch about x, roll about z), shifted, scaled,
projected in mild perspective and drawn as anti-aliased polygons on a 2-4x supersampled
canvas that is reduced with INTER_AREA. At rest the layout matches aligned VoxCeleb2 / PC-AVS
crops: eye centres at (87, 59) and (137, 59), inner mouth at (112, 120) of a 224 image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache

import cv2
import numpy as np

from pdfgc.data.synthetic.factors import EMOTIONS, Identity, neutral_factors
from pdfgc.face.geometry import TEMPLATE

CANONICAL = 224
ORIGIN = TEMPLATE[:2].mean(axis=0)  # eye midpoint in the 224 image: (112, 59)
FACE_UNIT = 100.0  # canonical pixels per unit of tx, ty
PIVOT = np.array([0.0, 30.0, -25.0])  # rotation centre: inside the head, behind the nose
CAMERA = 1500.0  # camera distance (perspective strength)
SHIFT = 4  # fractional bits of the drawing coordinates
MAX_OPENING = 16.0  # inner-lip gap at mouth_open = 1
EYE_X, EYE_WIDTH = 25.0, 35.0
EYE_UPPER, EYE_LOWER = 9.5, 6.0  # height of the open upper and lower lid above / below the corners
GAZE_TRAVEL = (0.35, 0.2)  # iris centre offset at gaze_x, gaze_y = 1, in eye widths
NUM_LANDMARKS = 70  # the 68 iBUG points, then the image-left and image-right pupil centres
MOUTH_Y, MOUTH_WIDTH = 61.0, 40.0
BROW_X = (-51.0, -10.0)  # outer, inner end of the image-left brow

# Per emotion at full intensity: brow raise, inner-brow raise, outer-brow drop (px), upper-lid
# droop, lower-lid raise, lid widening (fractions), mouth-corner lift, mouth widening (px).
# The brow and mouth terms are 1.5x the first renderer's; the lid fractions close or open the
# eye as a blink does, and 1.5x larger they cut a landmark probe's blink R² from 0.75 to 0.67.
EXPRESSION_KEYS = ("brow_raise", "brow_inner", "brow_outer", "lid_droop", "lid_raise", "widen",
                   "corner", "mouth_width")
EXPRESSIONS = {
    "neutral": (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    "happy": (3.0, 0.0, 0.0, 0.0, 0.5, 0.0, 13.5, 10.5),
    "sad": (0.0, 10.5, 4.5, 0.3, 0.0, 0.0, -10.5, -4.5),
    "angry": (-4.5, -9.0, 0.0, 0.35, 0.25, 0.0, -4.5, -6.0),
    "surprised": (13.5, 2.25, 0.0, 0.0, 0.0, 0.45, 0.0, -7.5),
}

# Dense curve samples; the landmarks are some of them (see ``_landmarks``).
LID_U = np.linspace(0.0, 1.0, 13)   # 37/38 at u = 1/3, 2/3 (indices 4, 8)
LIP_U = np.linspace(0.0, 1.0, 13)   # outer 49-53 at indices 2..10, inner 61-63 at 3, 6, 9
BROW_T = np.linspace(0.0, 1.0, 9)   # landmarks at indices 0, 2, 4, 6, 8
RING = np.linspace(0.0, 2.0 * np.pi, 16, endpoint=False)

# Parts that do not follow the head (canonical x, y): the bottom of the neck, the shoulders.
STATIC_PARTS = {
    "neck_base": np.array([[-34.0, 170], [34, 170]]),
    "clothes": np.array([[-130.0, 170], [-130, 148], [-100, 128], [-52, 118], [0, 142],
                         [52, 118], [100, 128], [130, 148], [130, 170]]),
}
SKIN_SHADE, LASH = 0.78, (40.0, 30.0, 28.0)
EYE_WHITE, TEETH = (238, 234, 228), (236, 232, 220)
MOUTH_INSIDE, TONGUE = (52, 18, 24), (150, 52, 62)


def render_frame(identity: Identity, factors: Mapping[str, float] | None = None,
                 image_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Draw one frame: (image (S, S, 3) uint8 RGB, landmarks (NUM_LANDMARKS, 2) float32
    pixels (x, y): the 68 iBUG points, then the image-left and image-right pupil centres).

    ``factors`` maps names of ``FACTOR_NAMES`` to values; missing ones are at rest
    (``neutral_factors``), so a factor can be changed alone.
    """
    f = {**neutral_factors(), **(factors or {})}
    parts = _face_parts(identity, f)
    flat = np.concatenate(list(parts.values()))  # (K, 3)
    points = project(flat, f, image_size)  # (K, 2)
    ends = np.cumsum([len(p) for p in parts.values()])
    drawn = dict(zip(parts, np.split(points, ends[:-1]), strict=True))
    drawn.update({name: _canonical_to_pixels(xy, image_size) for name, xy in STATIC_PARTS.items()})
    scale = supersampling(image_size)
    canvas = _background(identity, image_size * scale).copy()
    _draw(canvas, drawn, identity, scale, image_size)
    image = cv2.resize(canvas, (image_size, image_size), interpolation=cv2.INTER_AREA)
    return _shade(image, drawn["skin"]), drawn["landmarks"].astype(np.float32)


def supersampling(image_size: int) -> int:
    """Canvas scale: about 256 px or more to draw on, 1x to 4x."""
    return int(np.clip(np.ceil(256 / image_size), 1, 4))


def project(points: np.ndarray, factors: Mapping[str, float], image_size: int) -> np.ndarray:
    """Canonical 3D points (K, 3) posed by the factors' yaw .. tz -> pixels (K, 2)."""
    rotated = (points - PIVOT) @ rotation(factors["yaw"], factors["pitch"], factors["roll"]).T
    posed = (rotated + PIVOT) * (1.0 + factors["tz"])
    posed[:, :2] += FACE_UNIT * np.array([factors["tx"], factors["ty"]])
    depth = (CAMERA - 10.0) / (CAMERA - posed[:, 2:])  # (K, 1) perspective, 1 at z = 10
    return _canonical_to_pixels(posed[:, :2] * depth, image_size)


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3x3 rotation R = R_roll @ R_pitch @ R_yaw (degrees; image axes x right, y down, z out)."""
    y, p, r = np.radians([yaw, pitch, roll])
    r_yaw = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    r_pitch = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    r_roll = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return r_roll @ r_pitch @ r_yaw


def _canonical_to_pixels(xy: np.ndarray, image_size: int) -> np.ndarray:
    """Canonical x, y (origin at the eye midpoint) -> pixel centres of an S-pixel image."""
    return (xy + ORIGIN + 0.5) * (image_size / CANONICAL) - 0.5


# --------------------------------------------------------------------------- geometry


def _face_parts(identity: Identity, f: Mapping[str, float]) -> dict[str, np.ndarray]:
    """All posable 3D point sets of the face (canonical units), landmarks (70, 3) first."""
    expr = _expression(f)
    parts: dict[str, np.ndarray] = {}
    jaw = _jaw(identity, f["mouth_open"])
    brows = [_brow(identity, expr, side) for side in (-1, 1)]
    eyes = [_eye(identity, expr, f, side) for side in (-1, 1)]
    nose = _nose(identity)
    lips = _lips(identity, expr, f["mouth_open"], f["mouth_round"])
    parts["landmarks"] = _landmarks(jaw, brows, nose, eyes, lips)
    parts["skin"] = np.concatenate([jaw, _forehead(identity)])
    parts["scalp"] = _scalp(identity)
    parts["hairline"] = _hairline(identity)
    parts["neck"] = _neck(identity)
    parts["chin_shadow"] = jaw[4:13] * np.array([0.8, 1.0, 1.0]) + np.array([0.0, 7.0, -10.0])
    for side, name in ((-1, "l"), (1, "r")):
        parts[f"ear_{name}"] = _ear(identity, side)
    for (centre, thick), name in zip(brows, "lr", strict=True):
        parts[f"brow_{name}"] = _band(centre, thick)
    for eye, name in zip(eyes, "lr", strict=True):
        for key, points in eye.items():
            parts[f"{key}_{name}"] = points
    for key, points in lips.items():
        parts[key] = points
    parts.update(_nose_details(identity))
    return parts


def _expression(f: Mapping[str, float]) -> dict[str, float]:
    """The emotion's displacements: the one-hot categories weighted by the intensity."""
    weights = np.array([f[f"emotion_{name}"] for name in EMOTIONS]) * f["emotion_intensity"]
    table = np.array([EXPRESSIONS[name] for name in EMOTIONS])  # (E, 8)
    return dict(zip(EXPRESSION_KEYS, weights @ table, strict=True))


def _jaw(identity: Identity, opening: float) -> np.ndarray:
    """Jaw contour 0-16 (17, 3): a superellipse arc; the chin drops as the mouth opens."""
    phi = np.linspace(0.0, np.pi, 17)
    power = 2.0 / identity.jaw_square
    cos, sin = np.cos(phi), np.sin(phi)
    x = -64.0 * identity.face_width * np.sign(cos) * np.abs(cos) ** power
    y = 2.0 + 92.0 * identity.face_length * sin ** power
    y = y + 0.6 * MAX_OPENING * opening * sin ** 4
    z = -48.0 * np.abs(cos) + 12.0 * sin
    return np.stack([x, y, z], axis=1)


def _forehead(identity: Identity) -> np.ndarray:
    """Upper head outline (11, 3) from temple to temple, above the hairline."""
    theta = np.linspace(0.0, np.pi, 11)
    x = -64.0 * identity.face_width * np.cos(theta)
    y = 2.0 - 80.0 * np.sin(theta)
    z = -48.0 * np.abs(np.cos(theta)) + 5.0 * np.sin(theta)
    return np.stack([x, y, z], axis=1)


def _scalp(identity: Identity) -> np.ndarray:
    """Points whose hull is the hair behind the head; long hair falls to the shoulders."""
    theta = np.linspace(-0.35, np.pi + 0.35, 15)
    width = 72.0 * identity.face_width
    ring = np.stack([-width * np.cos(theta), 4.0 - 92.0 * np.sin(theta),
                     np.full_like(theta, -45.0)], axis=1)
    if not identity.long_hair:
        return ring
    fall = np.array([[-width - 6, 110, -40], [width + 6, 110, -40], [-width + 4, 150, -40],
                     [width - 4, 150, -40]])
    return np.concatenate([ring, fall])


def _hairline(identity: Identity) -> np.ndarray:
    """The front hair: the style's hairline across the forehead, closed over the top."""
    width = 64.0 * identity.face_width
    x = np.linspace(-1.0, 1.0, 17)
    style = identity.hair_style
    if style == "fringe":
        y = -30.0 + 6.0 * x ** 2 + 2.0 * (np.arange(17) % 2)
    elif style == "side_part":
        y = -40.0 + 14.0 * x + 14.0 * x ** 4
    elif style == "receding":
        y = -60.0 + 26.0 * x ** 2 + 10.0 * np.exp(-((x / 0.25) ** 2))
    else:
        y = -46.0 + 22.0 * x ** 4
    front = np.stack([width * x, y, 8.0 - 56.0 * x ** 2], axis=1)
    sides = np.array([[width + 2, 4, -48], [width + 10, -40, -30], [0.7 * width, -100, -20],
                      [0.0, -110, -20], [-0.7 * width, -100, -20], [-width - 10, -40, -30],
                      [-width - 2, 4, -48]])
    return np.concatenate([front, sides])


def _neck(identity: Identity) -> np.ndarray:
    """Top of the neck (4, 3), under the jaw; the bottom stays with the shoulders."""
    w = 31.0 * identity.face_width
    return np.array([[-w, 40, -40], [-w, 85, -40], [w, 85, -40], [w, 40, -40]])


def _ear(identity: Identity, side: int) -> np.ndarray:
    """An ear outline (16, 3) on the side of the head (side -1 image left, +1 right)."""
    u, v = np.cos(RING), np.sin(RING)
    x = side * (64.0 * identity.face_width - 5.0 + 7.0 * (1 + u))
    return np.stack([x, 8.0 + 16.0 * v, -42.0 - 6.0 * u], axis=1)


def _brow(identity: Identity, expr: Mapping[str, float], side: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """Brow centre line (9, 3) left to right in the image, and its thickness (9,)."""
    inner = BROW_T if side < 0 else 1.0 - BROW_T  # 0 at the outer end, 1 at the inner end
    x = -side * (BROW_X[0] + (BROW_X[1] - BROW_X[0]) * inner)
    y = (-16.5 - 5.0 * np.sin(np.pi * (0.15 + 0.75 * inner))
         - expr["brow_raise"] - expr["brow_inner"] * inner + expr["brow_outer"] * (1 - inner))
    z = 4.0 + 8.0 * inner
    thickness = (3.2 + 1.6 * inner) * identity.brow_thickness
    return np.stack([x, y, z], axis=1), thickness


def _band(centre: np.ndarray, thickness: np.ndarray) -> np.ndarray:
    """Closed outline (2n, 3) of a band of vertical ``thickness`` around a centre line."""
    half = np.zeros_like(centre)
    half[:, 1] = thickness / 2
    return np.concatenate([centre - half, (centre + half)[::-1]])


def _eye(identity: Identity, expr: Mapping[str, float], f: Mapping[str, float], side: int
         ) -> dict[str, np.ndarray]:
    """Lids (13, 3) each, left to right in the image, and iris, pupil and glint rings."""
    width = EYE_WIDTH * identity.eye_size
    cx = side * EYE_X
    x = cx - width / 2 + width * LID_U
    tilt = (-1.5, 1.0) if side < 0 else (1.0, -1.5)  # outer corners slightly higher
    base = tilt[0] + (tilt[1] - tilt[0]) * LID_U
    bump = np.sin(np.pi * LID_U)
    lower = base + EYE_LOWER * identity.eye_size * bump ** 0.8 * (1.0 - expr["lid_raise"])
    upper_open = base - EYE_UPPER * identity.eye_size * (1.0 + expr["widen"]) * bump ** 0.7
    closure = np.clip(f["blink"] + expr["lid_droop"], 0.0, 1.0)
    upper = upper_open + closure * (lower - upper_open)
    z = 2.0 + 4.0 * bump
    radius = 0.22 * width
    centre = np.array([cx + f["gaze_x"] * GAZE_TRAVEL[0] * width,
                       -1.0 + f["gaze_y"] * GAZE_TRAVEL[1] * width, 7.0])
    glint = centre + np.array([-0.3, -0.35, 0.0]) * radius
    return {
        "lid_up": np.stack([x, upper, z], axis=1),
        "lid_lo": np.stack([x, lower, z], axis=1),
        "crease": np.stack([x, upper_open - 3.0 - 1.5 * bump * (1 - closure), z], axis=1)[2:-2],
        "iris": _ring(centre, radius),
        "pupil": _ring(centre, 0.42 * radius),
        "glint": _ring(glint, 0.17 * radius),
    }


def _ring(centre: np.ndarray, radius: float) -> np.ndarray:
    """A circle (16, 3) facing the camera."""
    return centre + radius * np.stack([np.cos(RING), np.sin(RING), np.zeros_like(RING)], axis=1)


def _nose(identity: Identity) -> np.ndarray:
    """Nose landmarks 27-35 (9, 3): bridge top to tip, then the base left to right."""
    length = identity.nose_length
    bridge = np.array([[0, -1, 12], [0, 11, 20], [0, 23 * length, 28], [0, 35 * length, 36]])
    base = np.array([[-12, 39, 14], [-6, 41.5, 20], [0, 43, 24], [6, 41.5, 20], [12, 39, 14]])
    base[:, 1] *= length
    return np.concatenate([bridge, base])


def _nose_details(identity: Identity) -> dict[str, np.ndarray]:
    """Nostrils, the wings around them and the shadow along the bridge."""
    length = identity.nose_length
    arc = np.linspace(-0.6 * np.pi, 0.6 * np.pi, 7)
    parts = {"nose_shadow": np.array([[4.0, 6, 18], [5.0, 20 * length, 26],
                                      [4.0, 33 * length, 32]])}
    for side, name in ((-1, "l"), (1, "r")):
        parts[f"nostril_{name}"] = np.array([side * 5.5, 40.5 * length, 22]) + np.stack(
            [2.8 * np.cos(RING), 1.5 * np.sin(RING), np.zeros_like(RING)], axis=1)
        parts[f"wing_{name}"] = np.stack(
            [side * (10.0 + 3.0 * np.cos(arc)), length * (37.0 + 4.0 * np.sin(arc)),
             np.full_like(arc, 16.0)], axis=1)
    return parts


def _lips(identity: Identity, expr: Mapping[str, float], opening: float, rounding: float
          ) -> dict[str, np.ndarray]:
    """Outer and inner lip curves (13, 3) each, left to right in the image."""
    width = MOUTH_WIDTH * identity.mouth_width * (1.0 - 0.3 * rounding) + expr["mouth_width"]
    gap = MAX_OPENING * opening
    bump = np.sin(np.pi * LIP_U)
    corner = -expr["corner"] * (1.0 - bump) ** 1.5  # corners up for positive lift
    shape = bump ** (1.1 - 0.6 * rounding)
    inner_up = MOUTH_Y - 0.28 * gap * shape + corner
    inner_lo = MOUTH_Y + 0.72 * gap * shape + corner
    bow = 1.6 * np.exp(-(((LIP_U - 0.5) / 0.07) ** 2))  # Cupid's bow
    thick = identity.lip_thickness * (1.0 + 0.3 * rounding) * np.sqrt(bump)
    z = 20.0 + 4.0 * rounding - 9.0 * (1.0 - bump)
    x_out = -width / 2 + width * LIP_U
    x_in = -(width - 5.0) / 2 + (width - 5.0) * LIP_U
    return {
        "lip_out_up": np.stack([x_out, inner_up - 6.5 * thick + bow, z + 2], axis=1),
        "lip_out_lo": np.stack([x_out, inner_lo + 8.0 * thick, z + 2], axis=1),
        "lip_in_up": np.stack([x_in, inner_up, z], axis=1),
        "lip_in_lo": np.stack([x_in, inner_lo, z], axis=1),
    }


def _landmarks(jaw: np.ndarray, brows: list, nose: np.ndarray, eyes: list,
               lips: Mapping[str, np.ndarray]) -> np.ndarray:
    """The landmarks (70, 3): the 68 iBUG points picked from the drawn curves, then the
    iris centres (the means of the iris rings) of the image-left and image-right eye."""
    brow = [centre[::2] for centre, _ in brows]  # 17-21, 22-26
    eye = [np.concatenate([e["lid_up"][[0, 4, 8, 12]], e["lid_lo"][[8, 4]]]) for e in eyes]
    mouth = np.concatenate([
        lips["lip_out_up"][[0, 2, 4, 6, 8, 10, 12]],  # 48-54
        lips["lip_out_lo"][[10, 8, 6, 4, 2]],  # 55-59
        lips["lip_in_up"][[0, 3, 6, 9, 12]],  # 60-64
        lips["lip_in_lo"][[9, 6, 3]],  # 65-67
    ])
    pupils = np.stack([e["iris"].mean(axis=0) for e in eyes])  # 68, 69
    return np.concatenate([jaw, *brow, nose, *eye, mouth, pupils])


# --------------------------------------------------------------------------- drawing


def _shade(image: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """Darken the face softly towards its lower right, away from an upper-left light."""
    size = image.shape[0]
    hull = cv2.convexHull(skin.astype(np.float32))[:, 0]  # (k, 2) pixels
    light = np.array([-0.05, -0.035]) * size
    face, lit = (np.zeros((size, size), np.float32) for _ in range(2))
    cv2.fillPoly(face, [np.round(hull * (1 << SHIFT)).astype(np.int32)], 1.0, cv2.LINE_AA, SHIFT)
    cv2.fillPoly(lit, [np.round((hull + light) * (1 << SHIFT)).astype(np.int32)], 1.0,
                 cv2.LINE_AA, SHIFT)
    shadow = cv2.GaussianBlur(np.clip(face - lit, 0.0, 1.0), (0, 0), 0.03 * size) * face
    return np.rint(image * (1.0 - 0.25 * shadow[..., None])).astype(np.uint8)


@lru_cache(maxsize=16)
def _background(identity: Identity, size: int) -> np.ndarray:
    """A two-colour gradient with a soft vignette, (size, size, 3) uint8, read-only."""
    grid = (np.arange(size) + 0.5) / size - 0.5
    gx, gy = np.meshgrid(grid, grid)
    angle = identity.background_angle
    t = np.clip(gx * np.cos(angle) + gy * np.sin(angle) + 0.5, 0.0, 1.0)[..., None]
    first, second = (np.array(c) for c in identity.background)
    colour = (first + t * (second - first)) * (1.0 - 0.35 * (gx ** 2 + gy ** 2))[..., None]
    image = np.clip(colour, 0, 255).astype(np.uint8)
    image.flags.writeable = False
    return image


def _draw(canvas: np.ndarray, p: Mapping[str, np.ndarray], identity: Identity, scale: int,
          image_size: int) -> None:
    """Paint the parts back to front onto the supersampled canvas."""
    pen = _Pen(canvas, scale, image_size / CANONICAL)
    skin = np.array(identity.skin)
    shade = skin * SKIN_SHADE
    hair = np.array(identity.hair)
    pen.hull(p["scalp"], hair * 0.85)
    pen.fill(np.concatenate([p["neck"][:1], p["neck_base"], p["neck"][3:]]), shade)
    pen.fill(p["neck"], shade)
    pen.hull(p["chin_shadow"], shade * 0.8)
    pen.fill(p["clothes"], identity.clothes)
    for name in ("ear_l", "ear_r"):
        pen.fill(p[name], skin * 0.92)
        pen.line(p[name][5:12], shade * 0.9, 1.2)
    pen.hull(p["skin"], skin)
    pen.fill(p["hairline"], hair)
    pen.line(p["nose_shadow"], skin * 0.88, 2.5)
    for name in ("wing_l", "wing_r"):
        pen.line(p[name], shade, 1.2)
    for name in ("nostril_l", "nostril_r"):
        pen.fill(p[name], skin * 0.45)
    brow = hair * 0.55 + np.array(LASH) * 0.45
    for name in ("brow_l", "brow_r"):
        pen.fill(p[name], brow)
    for name in "lr":
        _draw_eye(pen, p, name, identity, skin)
    _draw_mouth(pen, p, identity, skin)


def _draw_eye(pen: _Pen, p: Mapping[str, np.ndarray], name: str, identity: Identity,
              skin: np.ndarray) -> None:
    """The eye white, iris, pupil and glint inside the lids, then crease, lower lid, lashes."""
    upper, lower = p[f"lid_up_{name}"], p[f"lid_lo_{name}"]
    opening = np.concatenate([upper, lower[::-1]])
    if _is_open(upper, lower, pen):
        iris = np.array(identity.iris)

        def inside(layer: _Pen) -> None:
            layer.fill(opening, EYE_WHITE)
            layer.fill(p[f"iris_{name}"], iris)
            layer.fill(p[f"pupil_{name}"], (16, 12, 12))
            layer.fill(p[f"glint_{name}"], (250, 250, 250))

        pen.clipped(opening, inside)
    pen.line(p[f"crease_{name}"], skin * 0.8, 1.0)
    pen.line(lower, skin * 0.8, 1.0)
    pen.line(upper, LASH, 1.8)


def _draw_mouth(pen: _Pen, p: Mapping[str, np.ndarray], identity: Identity,
                skin: np.ndarray) -> None:
    """The lips, then inside the opening the dark mouth, tongue and upper teeth."""
    lip = skin * np.array([0.72, 0.42, 0.45]) + np.array([45.0, 5.0, 12.0])
    pen.fill(np.concatenate([p["lip_out_up"], p["lip_out_lo"][::-1]]), lip)
    upper, lower = p["lip_in_up"], p["lip_in_lo"]
    opening = np.concatenate([upper, lower[::-1]])
    if _is_open(upper, lower, pen):
        teeth = np.concatenate([upper, (upper + [0.0, 4.5 * pen.unit])[::-1]])
        tongue = np.concatenate([lower - [0.0, 3.0 * pen.unit], lower[::-1]])

        def inside(layer: _Pen) -> None:
            layer.fill(opening, MOUTH_INSIDE)
            layer.fill(tongue, TONGUE)
            layer.fill(teeth, TEETH)

        pen.clipped(opening, inside)
    pen.line(upper, lip * 0.55, 1.6)


def _is_open(upper: np.ndarray, lower: np.ndarray, pen: _Pen) -> bool:
    """Whether a lid or lip opening is wider than a quarter canvas pixel somewhere."""
    return bool(np.max(lower[:, 1] - upper[:, 1]) * pen.scale > 0.25)


class _Pen:
    """Draws pixel-space polygons (x, y of the final image) onto a supersampled canvas."""

    def __init__(self, canvas: np.ndarray, scale: int, unit: float,
                 offset: tuple[int, int] = (0, 0)) -> None:
        self.canvas, self.scale, self.offset = canvas, scale, np.array(offset)
        self.unit = unit  # final pixels per canonical pixel (line widths are canonical)

    def _points(self, pts: np.ndarray) -> np.ndarray:
        canvas = (pts[:, :2] + 0.5) * self.scale - 0.5 - self.offset
        return np.round(canvas * (1 << SHIFT)).astype(np.int32)

    def fill(self, pts: np.ndarray, colour) -> None:
        cv2.fillPoly(self.canvas, [self._points(pts)], _colour(colour), cv2.LINE_AA, SHIFT)

    def hull(self, pts: np.ndarray, colour) -> None:
        self.fill(cv2.convexHull(pts.astype(np.float32))[:, 0], colour)

    def line(self, pts: np.ndarray, colour, width: float) -> None:
        thickness = max(1, int(round(width * self.unit * self.scale)))
        cv2.polylines(self.canvas, [self._points(pts)], False, _colour(colour), thickness,
                      cv2.LINE_AA, SHIFT)

    def clipped(self, outline: np.ndarray, draw: Callable[[_Pen], None]) -> None:
        """Run ``draw`` on a copy of the canvas around ``outline``; keep what lies inside."""
        corners = (outline[:, :2] + 0.5) * self.scale - 0.5
        x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int) - 2, 0)
        x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 3
        region = self.canvas[y0:y1, x0:x1]
        if region.size == 0:
            return
        layer = _Pen(region.copy(), self.scale, self.unit, offset=(x0, y0))
        draw(layer)
        mask = np.zeros(region.shape[:2], np.uint8)
        cv2.fillPoly(mask, [layer._points(outline)], 255, cv2.LINE_AA, SHIFT)
        alpha = mask[..., None].astype(np.float32) / 255.0
        region[:] = np.rint(region * (1.0 - alpha) + layer.canvas * alpha).astype(np.uint8)


def _colour(colour) -> tuple[float, float, float]:
    return tuple(float(c) for c in np.clip(colour, 0, 255))
