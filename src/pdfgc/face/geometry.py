"""Where an aligned face sits, and what is measured on 68-point landmarks: eye boxes, eye
aspect ratio, and head pose by a PnP fit to a mean face.

Pose conventions (camera axes as OpenCV: x right, y down, z forward): the head rotation is
R = Rz(roll) @ Rx(pitch) @ Ry(yaw) applied to :data:`MEAN_FACE_3D`; as in the synthetic data,
yaw > 0 turns the nose to the image right, pitch > 0 tips it down, roll > 0 turns the head
clockwise in the image; all three are zero for a face looking into the camera. The
translation is the position of the mean face's origin (the midpoint between the eyes) in
units of its eye distance (so tz is the distance from the camera).
"""

from __future__ import annotations

import cv2
import numpy as np

from pdfgc.face.landmarks import LEFT_EYE, RIGHT_EYE

TEMPLATE = np.array([[87.0, 59.0], [137.0, 59.0], [112.0, 120.0]])  # of a 224 image
"""The aligned face of PC-AVS's crops: image-left and image-right eye centres, inner-mouth
centre, in pixels of a 224 image (preprocessing aligns to it; the synthetic faces rest on it).
"""
MEAN_FACE_3D = np.array([
    # jaw line 0-16, from the image-left ear level round the chin
    [-71, 4, 60], [-70, 22, 57], [-67, 40, 52], [-63, 57, 45], [-56, 73, 34], [-46, 88, 20],
    [-34, 100, 6], [-18, 110, -7], [0, 114, -12], [18, 110, -7], [34, 100, 6], [46, 88, 20],
    [56, 73, 34], [63, 57, 45], [67, 40, 52], [70, 22, 57], [71, 4, 60],
    # brows 17-21 (image left, outer to inner) and 22-26 (image right, inner to outer)
    [-56, -15, 14], [-47, -22, 4], [-36, -25, -3], [-25, -25, -7], [-13, -21, -10],
    [13, -21, -10], [25, -25, -7], [36, -25, -3], [47, -22, 4], [56, -15, 14],
    # nose bridge 27-30 (nasion to tip) and base 31-35
    [0, -4, -14], [0, 9, -20], [0, 22, -27], [0, 35, -35],
    [-15, 45, -15], [-8, 47, -21], [0, 49, -24], [8, 47, -21], [15, 45, -15],
    # image-left eye 36-41: outer corner, upper lid, inner corner, lower lid
    [-46, 0, 8], [-36, -4, 0], [-26, -4, -1], [-16, 0, 2], [-26, 4, -1], [-36, 4, 0],
    # image-right eye 42-47: inner corner, upper lid, outer corner, lower lid
    [16, 0, 2], [26, -4, -1], [36, -4, 0], [46, 0, 8], [36, 4, 0], [26, 4, -1],
    # outer lips 48-59: image-left corner, upper lip, image-right corner, lower lip
    [-25, 72, -12], [-15, 65, -21], [-6, 62, -25], [0, 63, -26], [6, 62, -25], [15, 65, -21],
    [25, 72, -12], [15, 80, -20], [7, 83, -23], [0, 84, -24], [-7, 83, -23], [-15, 80, -20],
    # inner lips 60-67: image-left corner, upper, image-right corner, lower
    [-20, 72, -14], [-7, 70, -22], [0, 70, -23], [7, 70, -22],
    [20, 72, -14], [7, 74, -22], [0, 74, -23], [-7, 74, -22],
], dtype=np.float64)
"""A mean adult face at the 68 iBUG landmarks, in millimetres, written for pdfgc.

Axes as the camera's when the face looks into it: x to the image right, y down, z away from
the camera (the nose tip is the nearest point). The origin is the midpoint of the eye centres;
eye centres 62 mm apart, inner-mouth centre 72 mm below them, nose tip 35 mm in front of the
eye line, jaw contour 142 mm wide at ear level and 114 mm down to the chin; open-eye aspect
ratio 0.27. Proportions follow common anthropometric averages, not a measured dataset.
"""
EYE_DISTANCE_MM = 62.0  # of MEAN_FACE_3D: the unit of the pose translation
FOCAL_IN_SIDES = 2.0  # pinhole focal length in units of the image side (a ~28 degree view)


def eye_boxes(landmarks: np.ndarray) -> np.ndarray:
    """Eye boxes (..., 2, 4) x0, y0, x1, y1 of landmarks (..., K, 2): image-left eye (36-41)
    then image-right eye (42-47). A box is 1.5 x 1.0 times the eye's corner-to-corner
    distance ``w``, but at most 0.9 x 0.5 times the distance ``d`` between the two eyes'
    corner midpoints (so the boxes of large eyes stay apart; a human face has w = 0.48 d),
    centred 0.05 ``w`` above its corners' midpoint. Only the corners count, so a blink does
    not change the boxes."""
    corners = np.stack([landmarks[..., [eye.start, eye.start + 3], :]
                        for eye in (RIGHT_EYE, LEFT_EYE)], axis=-3)  # (..., eye, corner, 2)
    centres = corners.mean(axis=-2)  # (..., 2, 2)
    width = np.linalg.norm(corners[..., 1, :] - corners[..., 0, :], axis=-1)[..., None]
    distance = np.linalg.norm(centres[..., 1, :] - centres[..., 0, :], axis=-1)[..., None, None]
    centres = centres - width * np.array([0.0, 0.05])
    half = np.minimum(width * np.array([0.75, 0.5]), distance * np.array([0.45, 0.25]))
    return np.concatenate([centres - half, centres + half], axis=-1).astype(np.float32)


def camera_matrix(size: int) -> np.ndarray:
    """Pinhole intrinsics (3, 3) of a ``size`` x ``size`` crop: focal 2 x size, centred."""
    focal = FOCAL_IN_SIDES * size
    return np.array([[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]])


def euler_to_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation (3, 3) = Rz(roll) @ Rx(pitch) @ Ry(yaw) in camera axes, angles in degrees."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, -np.sin(y)], [0, 1, 0], [np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def matrix_to_euler(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a rotation made by :func:`euler_to_matrix`."""
    pitch = np.arcsin(np.clip(rotation[2, 1], -1.0, 1.0))
    yaw = np.arctan2(rotation[2, 0], rotation[2, 2])
    roll = np.arctan2(-rotation[0, 1], rotation[1, 1])
    return tuple(float(v) for v in np.degrees([yaw, pitch, roll]))


def project(rotation: np.ndarray, translation_mm: np.ndarray, size: int) -> np.ndarray:
    """The mean face posed by ``rotation`` and ``translation_mm`` seen by
    :func:`camera_matrix`: (68, 2) pixels."""
    points = MEAN_FACE_3D @ rotation.T + translation_mm  # (68, 3) camera coordinates
    pixels = points @ camera_matrix(size).T
    return pixels[:, :2] / pixels[:, 2:]


def head_pose(marks: np.ndarray, size: int) -> np.ndarray:
    """Head pose (N, 6) float32 yaw, pitch, roll (degrees), tx, ty, tz (eye distances) from
    landmarks (N, 68, 2) in a ``size`` crop, by a PnP fit to :data:`MEAN_FACE_3D` started
    from a frontal face at the distance its eye spacing implies."""
    camera = camera_matrix(size)
    poses = []
    for points in marks.astype(np.float64):
        eyes = np.linalg.norm(points[LEFT_EYE].mean(0) - points[RIGHT_EYE].mean(0))
        distance = camera[0, 0] * EYE_DISTANCE_MM / max(eyes, 1.0)
        rvec, tvec = np.zeros((3, 1)), np.array([[0.0], [0.0], [distance]])
        _, rvec, tvec = cv2.solvePnP(MEAN_FACE_3D, points, camera, None, rvec, tvec,
                                     useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
        angles = matrix_to_euler(cv2.Rodrigues(rvec)[0])
        poses.append([*angles, *(tvec.ravel() / EYE_DISTANCE_MM)])
    return np.asarray(poses, dtype=np.float32).reshape(-1, 6)


def eye_aspect_ratio(marks: np.ndarray) -> np.ndarray:
    """Eye aspect ratio (N,), the mean of both eyes: the two lid gaps over twice the corner
    distance, |p1 - p5| + |p2 - p4| over 2 |p0 - p3| of each eye's six points."""
    ratios = []
    for part in (RIGHT_EYE, LEFT_EYE):
        eye = marks[:, part]  # (N, 6, 2)
        gaps = (np.linalg.norm(eye[:, 1] - eye[:, 5], axis=-1)
                + np.linalg.norm(eye[:, 2] - eye[:, 4], axis=-1))
        ratios.append(gaps / (2.0 * np.linalg.norm(eye[:, 0] - eye[:, 3], axis=-1)))
    return np.mean(ratios, axis=0)
