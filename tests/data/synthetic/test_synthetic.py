"""The synthetic talking heads: determinism, factor locality, landmarks, audio-driven lips,
the dataset files, resuming and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pdfgc.data.manifest import read_labels, read_manifest
from pdfgc.data.synthetic import (
    EMOTIONS,
    FACTOR_NAMES,
    NUM_LANDMARKS,
    contact_sheet,
    ensure_dataset,
    generate_dataset,
    make_identity,
    mouth_from_audio,
    neutral_factors,
    random_factors,
    render_clip,
    render_frame,
)
from pdfgc.data.synthetic import generate as generate_module
from pdfgc.data.synthetic.__main__ import main
from pdfgc.data.synthetic.factors import (
    BLINK_RATE,
    EMOTION_FLOOR,
    LID_DRIFT,
    POSE_LIMITS,
    motion_tracks,
)
from pdfgc.data.synthetic.speech import synthesize_speech, vowel_sound
from pdfgc.errors import PdfgcError
from pdfgc.face.geometry import eye_boxes
from pdfgc.features import SAMPLE_RATE
from pdfgc.media import FrameSource, probe_video

SIZE = 128
TINY = dict(num_identities=4, clips_per_identity=2, seconds=0.4, image_size=32,
            val_identities=1, test_identities=1, seed=3, workers=1, test_clips_per_identity=3)
PUPILS = [68, 69]  # image-left, image-right pupil centre, after the 68 iBUG points
UPPER_LIDS = [37, 38, 43, 44]


@pytest.fixture(scope="module")
def person():
    return make_identity(5, seed=0)


@pytest.fixture(scope="module")
def rest(person):
    """The neutral frame and its landmarks at SIZE px."""
    return render_frame(person, None, SIZE)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return root, generate_dataset(root, **TINY)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels that differ by more than 2 levels in some channel."""
    return np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 2


def box_mask(box, shape=(SIZE, SIZE), pad: float = 0.0) -> np.ndarray:
    x0, y0, x1, y1 = box
    mask = np.zeros(shape, bool)
    mask[max(0, int(y0 - pad)): int(np.ceil(y1 + pad)) + 1,
         max(0, int(x0 - pad)): int(np.ceil(x1 + pad)) + 1] = True
    return mask


def points_box(points: np.ndarray) -> tuple:
    return (*points.min(axis=0), *points.max(axis=0))


def render(person, **factors):
    return render_frame(person, factors, SIZE)


# --------------------------------------------------------------------------- determinism


def test_render_clip_is_deterministic_per_seed(person):
    frames, audio, labels = render_clip(person, 7, seconds=0.6, image_size=32)
    again = render_clip(person, 7, seconds=0.6, image_size=32)
    other = render_clip(person, 8, seconds=0.6, image_size=32)
    assert frames.shape == (15, 32, 32, 3) and frames.dtype == np.uint8
    assert audio.dtype == np.float32 and len(audio) == 15 * SAMPLE_RATE // 25
    np.testing.assert_array_equal(frames, again[0])
    np.testing.assert_array_equal(audio, again[1])
    for key, value in labels.items():
        np.testing.assert_array_equal(value, again[2][key], err_msg=key)
    assert not np.array_equal(frames, other[0])
    assert not np.array_equal(labels["factors"], other[2]["factors"])


def test_factor_streams_are_independent():
    streams = dict(zip(("pose", "blink", "gaze", "emotion"),
                       np.random.SeedSequence(1).spawn(4), strict=True))
    first = motion_tracks(streams, 100)
    swapped = motion_tracks({**streams, "blink": np.random.SeedSequence(99)}, 100)
    for name in ("yaw", "pitch", "roll", "tx", "ty", "tz", "gaze_x", "emotion_intensity"):
        np.testing.assert_array_equal(first[name], swapped[name], err_msg=name)
    assert not np.array_equal(first["blink"], swapped["blink"])


def test_factor_ranges_over_many_clips():
    tracks = [motion_tracks(dict(zip(("pose", "blink", "gaze", "emotion"),
                                     np.random.SeedSequence(s).spawn(4), strict=True)), 100)
              for s in range(40)]
    yaw = np.concatenate([t["yaw"] for t in tracks])
    assert np.abs(yaw).max() <= 25 and yaw.std() > 4
    blink = np.stack([t["blink"] for t in tracks])  # (clips, frames)
    assert blink.min() >= 0 and blink.max() <= 1
    assert (np.diff(blink, axis=1) != 0).all()  # the lid drift moves the lids on every frame
    assert np.median(blink) < LID_DRIFT  # eyes mostly open ...
    closed = blink > 0.9  # ... and full blinks, about BLINK_RATE a second at 25 fps
    onsets = (closed[:, 1:] & ~closed[:, :-1]).sum() / (blink.size / 25)
    assert 0.4 * BLINK_RATE < onsets < 1.5 * BLINK_RATE
    for axis in ("gaze_x", "gaze_y"):
        gaze = np.concatenate([t[axis] for t in tracks])
        assert np.abs(gaze).max() <= 1 and np.abs(gaze).max() > 0.95 and gaze.std() > 0.3
    categories = {int(np.argmax([t[f"emotion_{e}"][0] for e in EMOTIONS])) for t in tracks}
    assert categories == {0, 1, 2, 3, 4}
    for t in tracks:
        intensity = t["emotion_intensity"]
        if t["emotion_neutral"][0]:
            assert not intensity.any()
        else:
            assert intensity.min() >= EMOTION_FLOOR and intensity.max() <= 1


def test_random_factors_cover_the_clip_ranges_independently():
    rng = np.random.default_rng(0)
    draws = [random_factors(rng) for _ in range(4000)]
    assert all(set(d) == set(FACTOR_NAMES) for d in draws)
    table = {name: np.array([d[name] for d in draws]) for name in FACTOR_NAMES}
    for name, limit in POSE_LIMITS.items():
        assert np.abs(table[name]).max() <= limit and np.abs(table[name]).max() > 0.95 * limit
    for name in ("mouth_open", "mouth_round", "blink"):
        assert table[name].min() >= 0 and table[name].max() <= 1 and table[name].max() > 0.95
    assert 0.6 < (table["blink"] <= LID_DRIFT).mean() < 0.7  # half within the drift, half any
    for name in ("gaze_x", "gaze_y"):
        assert np.abs(table[name]).max() <= 1 and np.abs(table[name]).max() > 0.99
    onehot = np.stack([table[f"emotion_{e}"] for e in EMOTIONS], axis=1)
    assert (onehot.sum(axis=1) == 1).all() and (onehot.mean(axis=0) > 0.15).all()
    intensity = table["emotion_intensity"]
    assert (intensity[onehot[:, 0] == 1] == 0).all()
    assert intensity[onehot[:, 0] == 0].min() >= EMOTION_FLOOR and intensity.max() <= 1
    correlation = np.corrcoef(np.stack([table[n] for n in ("yaw", "blink", "gaze_x", "gaze_y",
                                                           "mouth_open", "emotion_intensity")]))
    assert np.abs(correlation - np.eye(6)).max() < 0.1  # drawn independently


# --------------------------------------------------------------------------- layout


def test_neutral_layout_matches_aligned_crops(person):
    for size in (64, 224):
        _, points = render_frame(person, None, size)
        k = size / 224
        np.testing.assert_allclose(points[36:42].mean(0), np.array([87.5, 59.5]) * k - 0.5, atol=2)
        np.testing.assert_allclose(points[42:48].mean(0), np.array([137.5, 59.5]) * k - 0.5,
                                   atol=2)
        np.testing.assert_allclose(points[60:68].mean(0), np.array([112.5, 120.5]) * k - 0.5,
                                   atol=2)


@pytest.mark.parametrize("pose", [dict(yaw=25, pitch=20, tx=0.08, ty=0.06, tz=0.06),
                                  dict(yaw=-25, pitch=-20, roll=15, tx=-0.08, ty=-0.06),
                                  dict(roll=-15, pitch=20, ty=0.06, tz=0.06, mouth_open=1.0)])
def test_released_crop_keeps_the_face(person, pose):
    """The crop keeps rows 0..191 and columns 16..207 of a 224 image: all landmarks inside."""
    _, points = render_frame(make_identity(1), pose, 224)
    assert points[:, 0].min() > 16 and points[:, 0].max() < 207
    assert points[:, 1].min() > 0 and points[:, 1].max() < 191


def test_image_size_224_renders(person):
    image, points = render_frame(person, {"mouth_open": 0.5}, 224)
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8
    assert points.shape == (NUM_LANDMARKS, 2) == (70, 2) and points.dtype == np.float32


# --------------------------------------------------------------------------- locality


def test_mouth_opening_changes_the_mouth_not_the_eyes(person, rest):
    image, points = rest
    opened, _ = render(person, mouth_open=1.0)
    diff = changed(image, opened)
    mouth = box_mask(points_box(points[48:68]))
    assert diff[mouth].mean() > 0.1
    for box in eye_boxes(points):
        assert not diff[box_mask(box)].any()


def test_blink_changes_the_eyes_not_the_mouth(person, rest):
    image, points = rest
    closed, closed_points = render(person, blink=1.0)
    diff = changed(image, closed)
    eyes = box_mask(eye_boxes(points)[0]) | box_mask(eye_boxes(points)[1])
    assert diff[eyes].sum() > 20
    assert not diff[~eyes].any()
    np.testing.assert_allclose(eye_boxes(closed_points), eye_boxes(points), atol=0.5)
    # the upper lid lands on the lower lid; the pupil landmarks stay where the iris is
    np.testing.assert_allclose(closed_points[UPPER_LIDS], closed_points[[41, 40, 47, 46]],
                               atol=0.05)
    np.testing.assert_array_equal(closed_points[PUPILS], points[PUPILS])


def test_gaze_moves_only_the_pupils(person, rest):
    image, points = rest
    looked, looked_points = render(person, gaze_x=1.0, gaze_y=-0.5)
    diff = changed(image, looked)
    eyes = box_mask(eye_boxes(points)[0]) | box_mask(eye_boxes(points)[1])
    assert diff[eyes].sum() > 10 and not diff[~eyes].any()
    np.testing.assert_array_equal(looked_points[:68], points[:68])
    shift = looked_points[PUPILS] - points[PUPILS]  # (2, 2): both pupils right and up
    assert (shift[:, 0] > 0).all() and (shift[:, 1] < 0).all()
    np.testing.assert_allclose(shift[0], shift[1], atol=0.1)


def test_pupil_landmarks_are_the_iris_centres(person, rest):
    """At rest each pupil landmark is at its eye's centre; posed, it follows the head."""
    points = rest[1]
    for pupil, first in zip(PUPILS, (36, 42), strict=True):
        corners = points[[first, first + 3]].mean(axis=0)
        assert np.abs(points[pupil] - corners).max() < 1.5 * SIZE / 224
    turned = render(person, yaw=20, roll=10, tx=0.05)[1]
    assert np.linalg.norm(turned[PUPILS] - points[PUPILS], axis=1).min() > 2


def test_blink_and_gaze_move_landmarks_beyond_the_trunk_error_at_64px(person):
    """At 64 px a full blink moves the upper lids and full gaze the pupils by several
    times the 0.8 px landmark error of a trained 64 px trunk."""
    points = render_frame(person, None, 64)[1]
    closed = render_frame(person, {"blink": 1.0}, 64)[1]
    lid = np.abs(closed[UPPER_LIDS, 1] - points[UPPER_LIDS, 1])
    assert lid.mean() > 3.5 and np.abs(closed[PUPILS] - points[PUPILS]).max() == 0
    for gaze, axis, travel in (("gaze_x", 0, 3.0), ("gaze_y", 1, 1.7)):
        ends = [render_frame(person, {gaze: g}, 64)[1][PUPILS, axis] for g in (-1.0, 1.0)]
        assert (ends[1] - ends[0] > 2 * travel).all(), gaze


def test_emotion_changes_brows_and_mouth_corners(person, rest):
    image, points = rest
    for emotion in ("happy", "sad", "angry", "surprised"):
        moved, moved_points = render(person, emotion_neutral=0.0, emotion_intensity=1.0,
                                     **{f"emotion_{emotion}": 1.0})
        diff = changed(image, moved)
        brows = box_mask(points_box(points[17:27]), pad=2)
        mouth = box_mask(points_box(points[48:68]), pad=2)
        assert diff[brows].any() or diff[mouth].any(), emotion
        assert not diff[:8].any() and not diff[:, :8].any(), emotion  # top rows, left border
        np.testing.assert_array_equal(moved_points[:17], points[:17])  # jaw untouched
        np.testing.assert_array_equal(moved_points[27:36], points[27:36])  # nose untouched
    happy = render(person, emotion_neutral=0.0, emotion_happy=1.0, emotion_intensity=1.0)[1]
    sad = render(person, emotion_neutral=0.0, emotion_sad=1.0, emotion_intensity=1.0)[1]
    assert happy[[48, 54], 1].mean() < points[[48, 54], 1].mean() - 1  # corners up
    assert sad[[48, 54], 1].mean() > points[[48, 54], 1].mean() + 1  # corners down
    surprised = render(person, emotion_neutral=0.0, emotion_surprised=1.0,
                       emotion_intensity=1.0)[1]
    assert surprised[17:27, 1].mean() < points[17:27, 1].mean() - 2  # brows up


@pytest.mark.parametrize("emotion", EMOTIONS)
def test_full_emotions_stay_plausible(emotion):
    """At full intensity each brow stays above its eye's upper lid (the polyline through the
    lid landmarks, where the brow is over it), and the lids and lips keep their order."""
    for index in range(8):
        points = render_frame(make_identity(index, seed=2),
                              {"emotion_neutral": 0.0, f"emotion_{emotion}": 1.0,
                               "emotion_intensity": 1.0}, SIZE)[1]
        for brow, lid in (([17, 18, 19, 20, 21], [36, 37, 38, 39]),
                          ([22, 23, 24, 25, 26], [42, 43, 44, 45])):
            over = points[brow][(points[brow, 0] > points[lid, 0].min())
                                & (points[brow, 0] < points[lid, 0].max())]
            assert len(over) >= 3
            assert (over[:, 1] < np.interp(over[:, 0], *points[lid].T)).all(), (index, brow)
        assert (points[[37, 38, 43, 44], 1] < points[[41, 40, 47, 46], 1]).all()
        assert (points[49:54, 1] < points[[59, 58, 57, 56, 55], 1]).all()  # outer lips


def test_zero_intensity_is_neutral(person, rest):
    image, _ = render(person, emotion_neutral=0.0, emotion_angry=1.0, emotion_intensity=0.0)
    np.testing.assert_array_equal(image, rest[0])


def test_pose_moves_everything(person, rest):
    image, points = rest
    for pose in (dict(yaw=20), dict(pitch=15), dict(roll=10), dict(tx=0.05), dict(tz=0.05)):
        turned, turned_points = render(person, **pose)
        assert np.median(np.linalg.norm(turned_points - points, axis=1)) > 0.3, pose
        diff = changed(image, turned)
        for box in (*eye_boxes(points), points_box(points[48:68])):
            assert diff[box_mask(box)].any(), pose


def test_yaw_foreshortens_the_far_side(person, rest):
    points = rest[1]
    turned = render(person, yaw=25)[1]
    width = np.ptp(points[:17, 0])
    assert np.ptp(turned[:17, 0]) < width
    # the nose tip turns further than the jaw ends: the layout is 3D
    assert turned[30, 0] - points[30, 0] > turned[0, 0] - points[0, 0] + 2


# --------------------------------------------------------------------------- landmarks


@pytest.mark.parametrize("index", range(6))
def test_landmarks_lie_on_the_drawn_features(index):
    person = make_identity(index, seed=11)
    image, points = render(person, mouth_open=1.0)
    skin = np.array(person.skin)

    def colour(landmark: int) -> np.ndarray:
        x, y = np.round(points[landmark]).astype(int)
        return image[y, x].astype(float)

    for landmark in (61, 62, 63, 65, 66, 67):  # inner lips: lip or mouth, not skin
        assert np.linalg.norm(colour(landmark) - skin) > 22, landmark
    for landmark in (37, 38, 43, 44):  # upper lids: the dark lash line
        assert colour(landmark).mean() < 0.8 * skin.mean(), landmark
    for first in (36, 42):  # the eye centre shows the iris or pupil
        centre = np.round(points[first: first + 6].mean(axis=0)).astype(int)
        assert np.abs(image[centre[1], centre[0]].astype(float) - skin).max() > 30
    for gaze in (dict(), dict(gaze_x=0.8, gaze_y=0.3), dict(gaze_x=-0.8, gaze_y=-0.3)):
        image, points = render(person, **gaze)
        for landmark in PUPILS:  # the dark pupil
            assert colour(landmark).max() < 60, (landmark, gaze)


def test_eye_boxes_contain_the_eyes(rest):
    points = rest[1]
    boxes = eye_boxes(points)
    assert boxes.shape == (2, 4)
    for box, first in zip(boxes, (36, 42), strict=True):
        eye = points[first: first + 6]
        assert (eye[:, 0] >= box[0]).all() and (eye[:, 0] <= box[2]).all()
        assert (eye[:, 1] >= box[1]).all() and (eye[:, 1] <= box[3]).all()
    assert boxes[0, 2] < boxes[1, 0]  # image-left eye first, boxes apart
    assert eye_boxes(np.stack([points, points])).shape == (2, 2, 4)


# --------------------------------------------------------------------------- audio -> lips


def test_mouth_is_a_function_of_the_audio():
    opening, rounding = mouth_from_audio(np.zeros(16000, np.float32), 25)
    assert not opening.any() and not rounding.any()
    for vowel, rounded in (("a", False), ("i", False), ("o", True), ("u", True)):
        opening, rounding = mouth_from_audio(vowel_sound(vowel, 0.4), 10)
        assert (opening[2:8] > 0.5).all(), vowel
        assert ((rounding[2:8] > 0.6) if rounded else (rounding[2:8] < 0.15)).all(), vowel
    loud = np.concatenate([np.zeros(6400, np.float32), vowel_sound("a", 0.4)])
    opening, _ = mouth_from_audio(loud, 25)
    assert opening[:10].max() == 0 and opening[11:19].min() > 0.5  # frame i reads time i / 25


def test_speech_has_pauses_and_syllables():
    audio = synthesize_speech(np.random.default_rng(0), 3 * SAMPLE_RATE)
    assert audio.dtype == np.float32 and np.abs(audio).max() <= 1
    assert np.sqrt(np.mean(audio.astype(float) ** 2)) == pytest.approx(0.1, rel=1e-3)
    opening, rounding = mouth_from_audio(audio, 75)
    assert (opening == 0).mean() > 0.1 and (opening > 0.5).mean() > 0.1
    assert (rounding > 0.5).any() and (rounding[opening == 0] == 0).all()


def test_clip_labels_follow_the_audio(person):
    _, audio, labels = render_clip(person, 4, seconds=1.2, image_size=32)
    names = list(labels["factor_names"])
    opening, rounding = mouth_from_audio(audio, 30)
    np.testing.assert_array_equal(labels["factors"][:, names.index("mouth_open")], opening)
    np.testing.assert_array_equal(labels["factors"][:, names.index("mouth_round")], rounding)
    assert names == list(FACTOR_NAMES)
    np.testing.assert_array_equal(labels["pose"], labels["factors"][:, :6])


# --------------------------------------------------------------------------- dataset files


def test_dataset_round_trip(tiny_dataset):
    root, records = tiny_dataset
    assert read_manifest(root) == records and len(records) == 3 * 2 + 3
    splits, clips = {}, {}
    for record in records:
        splits.setdefault(record.split, set()).add(record.identity)
        clips[record.split] = clips.get(record.split, 0) + 1
        assert record.source == "synthetic" and record.image_size == 32 and record.frames == 10
        labels = read_labels(root / record.labels)
        assert labels["landmarks"].shape == (10, 70, 2)
        assert labels["pose"].shape == (10, 6) and labels["blink"].shape == (10,)
        assert labels["gaze"].shape == (10, 2) and labels["eye_boxes"].shape == (10, 2, 4)
        assert labels["mel"].shape[1] == 80 and labels["mel"].shape[0] >= 40
        assert labels["factors"].shape == (10, len(FACTOR_NAMES))
        assert list(labels["factor_names"]) == list(FACTOR_NAMES)
        info = probe_video(root / record.video)
        assert info["frames"] == 10 and info["has_audio"] and info["width"] == 32
        assert info["audio_seconds"] == pytest.approx(0.4, abs=0.07)
    assert {k: len(v) for k, v in splits.items()} == {"train": 2, "val": 1, "test": 1}
    assert clips == {"train": 4, "val": 2, "test": 3}  # test_clips_per_identity for the test
    assert not set.intersection(*splits.values())
    assert json.loads((root / "generation.json").read_text())["test_clips_per_identity"] == 3


def test_stored_clips_match_render_clip(tiny_dataset):
    root, records = tiny_dataset
    record = records[3]
    identity, clip = int(record.identity[3:]), int(record.clip.split("/")[1])
    frames, _, labels = render_clip(make_identity(identity, TINY["seed"]),
                                    (TINY["seed"], generate_module.CLIP_STREAM, identity, clip),
                                    TINY["seconds"], TINY["image_size"])
    stored = read_labels(root / record.labels)
    for key, value in labels.items():
        np.testing.assert_array_equal(stored[key], value, err_msg=key)
    decoded = FrameSource(root / record.video).read(list(range(10)))
    assert np.abs(decoded.astype(int) - frames).mean() < 6  # H.264 at crf 18


def test_same_seed_same_dataset(tiny_dataset, tmp_path):
    """Bit-identical files from a second run, in worker processes this time."""
    root, records = tiny_dataset
    assert generate_dataset(tmp_path, **{**TINY, "workers": 2}) == records
    for name in ("manifest.jsonl", "generation.json",
                 *(r.labels for r in records), *(r.video for r in records)):
        assert (root / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_resume_skips_finished_clips(tmp_path, monkeypatch):
    params = {**TINY, "num_identities": 3, "clips_per_identity": 1, "test_clips_per_identity": 1}
    generate_dataset(tmp_path, **params)
    (tmp_path / "clips/syn0001/000.npz").unlink()
    written = []
    real = generate_module._write_clip
    monkeypatch.setattr(generate_module, "_write_clip",
                        lambda job: written.append(job) or real(job))
    records = generate_dataset(tmp_path, **params)
    assert [(job.identity, job.clip) for job in written] == [(1, 0)]
    assert len(records) == 3 and (tmp_path / "clips/syn0001/000.npz").is_file()


def test_ensure_dataset_generates_only_when_needed(tmp_path, monkeypatch):
    params = {**TINY, "num_identities": 3, "clips_per_identity": 1}
    del params["test_clips_per_identity"]
    first = ensure_dataset(tmp_path, **params)
    stored = json.loads((tmp_path / "generation.json").read_text())
    assert stored["image_size"] == 32 and "workers" not in stored
    assert stored["test_clips_per_identity"] == 1 and len(first) == 3  # the default

    def fail(*args, **kwargs):
        raise AssertionError("regenerated")

    with monkeypatch.context() as patch:
        patch.setattr(generate_module, "_claim", fail)
        assert ensure_dataset(tmp_path, **{**params, "workers": 2}) == first
    longer = ensure_dataset(tmp_path, **{**params, "seconds": 0.8})
    assert [r.frames for r in longer] == [20, 20, 20]
    assert probe_video(tmp_path / longer[0].video)["frames"] == 20


@pytest.mark.parametrize("bad", [dict(image_size=33), dict(image_size=8),
                                 dict(num_identities=2), dict(val_identities=-1),
                                 dict(clips_per_identity=0), dict(test_clips_per_identity=0),
                                 dict(seconds=0.01),
                                 dict(workers=0)])
def test_bad_settings_are_user_errors(tmp_path, bad):
    with pytest.raises(PdfgcError) as err:
        generate_dataset(tmp_path, **{**TINY, **bad})
    assert "\n" not in str(err.value)


def test_contact_sheet(tiny_dataset, tmp_path):
    root, records = tiny_dataset
    path = contact_sheet(root, tmp_path / "sheet.png", rows=2, cols=3)
    from pdfgc.media import read_image

    sheet = read_image(path)
    assert sheet.shape == (2 * (128 + 28), 3 * 128, 3)
    assert sheet[:128].std() > 10  # not blank


def test_command_line(tmp_path, capsys):
    main([str(tmp_path / "data"), "--image-size", "32", "--identities", "3",
          "--clips-per-identity", "1", "--seconds", "0.2", "--val-identities", "1",
          "--test-identities", "1", "--test-clips-per-identity", "2", "--workers", "1",
          "--rows", "1", "--cols", "2"])
    assert "4 clips" in capsys.readouterr().out
    assert (tmp_path / "data" / "contact_sheet.png").is_file()
    assert [r.split for r in read_manifest(tmp_path / "data")] == ["train", "val", "test", "test"]
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "bad"), "--image-size", "31"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: image_size")


def test_neutral_factors_cover_every_name():
    assert set(neutral_factors()) == set(FACTOR_NAMES)
    assert len(FACTOR_NAMES) == len(set(FACTOR_NAMES)) == 17
