"""Face geometry and landmarks (``pdfgc.face``): head pose, the mean face, the eye aspect
ratio, tracking, and the landmark backends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pdfgc.data.preprocess import runner
from pdfgc.data.preprocess.labels import blink
from pdfgc.errors import PdfgcError
from pdfgc.face.geometry import (
    MEAN_FACE_3D,
    euler_to_matrix,
    eye_aspect_ratio,
    head_pose,
    matrix_to_euler,
    project,
)
from pdfgc.face.landmarks import (
    FaceAlignmentDetector,
    FrameFaces,
    SidecarDetector,
    fill_gaps,
    smooth,
)
from pdfgc.outside_weights import REGISTER
from pdfgc.samples import portrait

SIZE = 224


def test_pnp_recovers_a_known_head_pose():
    assert matrix_to_euler(euler_to_matrix(25, -12, 7)) == pytest.approx((25, -12, 7))
    rng = np.random.default_rng(0)
    truth = [(20, -10, 5), (-30, 12, -8), (0, 0, 0), (10, 20, 15)]
    marks = np.stack([project(euler_to_matrix(*angles), np.array([8.0, -5.0, 500.0]), SIZE)
                      for angles in truth])
    pose = head_pose(marks + rng.normal(0, 0.3, marks.shape), SIZE)
    assert np.abs(pose[:, :3] - np.array(truth)).max() < 1.5
    assert np.abs(pose[:, 3:] - np.array([8, -5, 500]) / 62).max() < 0.3


def test_pose_convention_matches_the_synthetic_data():
    from pdfgc.data.synthetic.face import rotation

    flip_z = np.diag([1.0, 1.0, -1.0])  # the synthetic faces' z points to the camera
    for angles in [(20, 0, 0), (0, 15, 0), (0, 0, 10), (20, -10, 5)]:
        np.testing.assert_allclose(euler_to_matrix(*angles),
                                   flip_z @ rotation(*angles) @ flip_z, atol=1e-12)
    front, right, down = (project(euler_to_matrix(*a), np.array([0, 0, 600.0]), SIZE)[30]
                          for a in [(0, 0, 0), (20, 0, 0), (0, 15, 0)])
    assert right[0] - front[0] > 5 and down[1] - front[1] > 3  # the nose tip moves


def test_mean_face_is_symmetric_and_frontal():
    mirrored = MEAN_FACE_3D * [-1, 1, 1]
    pairs = {**{i: 16 - i for i in range(17)}, **{i: 43 - i for i in range(17, 27)}}
    pairs.update({36: 45, 37: 44, 38: 43, 39: 42, 40: 47, 41: 46, 31: 35, 32: 34, 48: 54,
                  49: 53, 50: 52, 59: 55, 58: 56, 60: 64, 61: 63, 67: 65})
    for a, b in pairs.items():
        np.testing.assert_allclose(mirrored[a], MEAN_FACE_3D[b])
    frontal = project(np.eye(3), np.array([0, 0, 600.0]), SIZE)
    assert np.abs(head_pose(frontal[None], SIZE)[0, :3]).max() < 0.01


def test_ear_falls_as_the_eyes_close():
    open_eyes = project(np.eye(3), np.array([0, 0, 600.0]), SIZE)
    frames = []
    for closure in np.linspace(0, 1, 6):
        marks = open_eyes.copy()
        for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
            middle = (open_eyes[upper] + open_eyes[lower]) / 2
            marks[upper] += closure * (middle - open_eyes[upper])
            marks[lower] += closure * (middle - open_eyes[lower])
        frames.append(marks)
    marks = np.stack(frames + [open_eyes] * 6)
    ear = eye_aspect_ratio(marks)
    assert np.all(np.diff(ear[:6]) < 0) and ear[0] == pytest.approx(0.2667, abs=0.01)
    closure = blink(marks)
    assert closure[0] == pytest.approx(0, abs=0.02) and closure[5] == pytest.approx(1, abs=0.02)
    assert np.all(np.diff(closure[:6]) > 0)


def test_tracking_fills_gaps_and_smooths():
    times = np.array([0, 2, 4])
    marks = np.stack([np.full((68, 2), v, np.float32) for v in (0.0, np.nan, 8.0)])
    filled = fill_gaps(times, marks, 6)
    np.testing.assert_allclose(filled[:, 0, 0], [0, 2, 4, 6, 8, 8])
    ramp = np.arange(10, dtype=np.float32)[:, None]
    np.testing.assert_allclose(smooth(ramp, 3)[1:-1, 0], ramp[1:-1, 0])
    np.testing.assert_allclose(smooth(ramp, 3)[[0, -1], 0], [1 / 3, 9 - 1 / 3], rtol=1e-6)


def test_face_problems():
    face = project(np.eye(3), np.array([0, 0, 600.0]), SIZE).astype(np.float32)  # ~ 106 px
    ok = [FrameFaces(1, face)] * 9
    assert runner.face_problem(ok + [FrameFaces(0, None)], 50, 0.2) is None
    assert runner.face_problem(ok[:7] + [FrameFaces(0, None)] * 3, 50, 0.2)[0] == "no face"
    assert runner.face_problem(ok[:7] + [FrameFaces(2, face)] * 3, 50, 0.2)[0] == "several faces"
    assert runner.face_problem(ok, 150, 0.2)[0] == "face too small"


FAN_FILE, S3FD_FILE = REGISTER["fan"].file, REGISTER["s3fd"].file


def test_face_alignment_without_weights_names_the_files(tmp_path):
    with pytest.raises(PdfgcError, match=f"backends.face_alignment.weights: {FAN_FILE} not"
                       ) as err:
        FaceAlignmentDetector(weights=str(tmp_path))
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_face_alignment_backend_runs_on_local_weights(tmp_path):
    """Wiring only: random weights in the two files face-alignment would download."""
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), tmp_path / FAN_FILE)
    torch.save(s3fd().state_dict(), tmp_path / S3FD_FILE)
    detector = FaceAlignmentDetector(weights=str(tmp_path), max_side=160)
    (faces,) = detector.detect(portrait()[None], Path("x.mp4"), np.array([0]))
    assert faces.count > 0  # random weights see faces everywhere
    assert faces.landmarks.shape == (68, 2) and np.isfinite(faces.landmarks).all()


def test_sidecar_keeps_the_ibug_68_of_longer_landmark_sets(tmp_path):
    """A sidecar of 70 points (pdfgc's synthetic clips end with the two pupils) gives the
    first 68; fewer than 68 is a one-line error."""
    video = tmp_path / "clip.mp4"
    marks = np.random.default_rng(0).uniform(0, 64, (3, 70, 2)).astype(np.float32)
    np.savez(tmp_path / "clip.npz", landmarks=marks)
    faces = SidecarDetector().detect(np.zeros((3, 64, 64, 3), np.uint8), video, np.arange(3))
    assert [f.count for f in faces] == [1, 1, 1]
    np.testing.assert_array_equal(np.stack([f.landmarks for f in faces]), marks[:, :68])
    np.savez(tmp_path / "clip.npz", landmarks=marks[:, :60])
    with pytest.raises(PdfgcError, match="at least 68"):
        SidecarDetector().detect(np.zeros((3, 64, 64, 3), np.uint8), video, np.arange(3))
