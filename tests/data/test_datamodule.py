"""Datasets and the DataModule, on tiny datasets of the manifest contract made here.

Every frame's red channel encodes its frame index and its green channel its clip number; mel
row ``r`` of clip ``c`` holds ``r`` in band 0 and ``c`` in band 1. So a test can read back
which frame and which mel rows a sample holds.
"""

from __future__ import annotations

import sys
import types
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from pytorch_lightning.trainer.connectors.data_connector import _get_distributed_sampler
from pytorch_lightning.utilities.data import _is_dataloader_shuffled
from torch.utils.data import DataLoader

from pdfgc.data.augment import MotionAugment
from pdfgc.data.datamodule import DataEpochCallback, VoxCeleb2DataModule
from pdfgc.data.datasets import ClipIndex, TalkingHeadDataset
from pdfgc.data.manifest import ClipRecord, read_labels, write_labels, write_manifest
from pdfgc.errors import PdfgcError
from pdfgc.features import FPS, SAMPLE_RATE, prepare_image
from pdfgc.features.image import crop_points
from pdfgc.media import VideoWriter

from conftest import ROOT

SIZE = 64  # stored frame side
FRAMES = 20
K = 5
STEP_T, STEP_C = 12, 22  # colour steps that encode frame index and clip number
EYES = np.array([[14, 22, 26, 30], [38, 22, 50, 30]], dtype=np.float32)  # x0 y0 x1 y1
# identity -> (split, clips): "a" has six times the clips of "b" and "c"
LAYOUT = {"a": ("train", 6), "b": ("train", 1), "c": ("train", 1), "d": ("val", 1),
          "e": ("test", 1)}
SHORT_CLIP = "b/0"  # its audio covers only the first 12 frames


def coded_frames(clip_number: int, frames: int = FRAMES, size: int = SIZE) -> np.ndarray:
    """(frames, size, size, 3) uint8: red = 8 + 12 t, green = 12 + 22 clip, blue = 128."""
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    out[..., 0] = (8 + STEP_T * np.arange(frames))[:, None, None]
    out[..., 1] = 12 + STEP_C * clip_number
    out[..., 2] = 128
    return out


def coded_mel(clip_number: int, frames: int) -> np.ndarray:
    """(4 frames + 8, 80), the length the released mel has for ``frames`` video frames."""
    mel = np.zeros((4 * frames + 8, 80), dtype=np.float32)
    mel[:, 0] = np.arange(len(mel))
    mel[:, 1] = clip_number
    return mel


def write_clip(root: Path, clip: str, identity: str, split: str, frames: np.ndarray,
               mel: np.ndarray, factors: bool = False) -> ClipRecord:
    """Write ``clip``'s mp4 (silent audio) and labels; eye boxes move with the frame index."""
    n, size = len(frames), frames.shape[1]
    with VideoWriter(root / f"{clip}.mp4", fps=FPS, audio=np.zeros(n * SAMPLE_RATE // FPS),
                     sample_rate=SAMPLE_RATE) as writer:
        writer.write(frames)
    t = np.arange(n, dtype=np.float32)
    gaze = np.stack([np.sin(t), np.cos(t)], axis=1).astype(np.float32)
    gaze[::2] = np.nan  # unknown on even frames
    arrays = {
        "landmarks": np.random.default_rng(n).uniform(0, size - 1, (n, 68, 2)).astype(np.float32),
        "pose": np.tile(t[:, None], (1, 6)),
        "blink": (t % 7) / 7,
        "gaze": gaze,
        "eye_boxes": EYES * size / SIZE + (t % 3)[:, None, None],
        "mel": mel,
    }
    if factors:
        arrays |= {"factors": np.stack([t, -t], axis=1), "factor_names": np.array(["t", "m"])}
    write_labels(root / f"{clip}.npz", **arrays)
    return ClipRecord(clip=clip, identity=identity, video=f"{clip}.mp4", labels=f"{clip}.npz",
                      frames=n, split=split, source="test", image_size=size)


def write_coded_dataset(root: Path, layout: dict = LAYOUT, factors: bool = False) -> list:
    records = []
    for identity, (split, clips) in layout.items():
        for i in range(clips):
            number = len(records)
            mel = coded_mel(number, FRAMES)
            if f"{identity}/{i}" == SHORT_CLIP:
                mel = mel[: 4 * 12 + 8]
            records.append(write_clip(root, f"{identity}/{i}", identity, split,
                                      coded_frames(number), mel, factors))
    write_manifest(root, records)
    return records


def frame_code(image: torch.Tensor) -> tuple[int, int]:
    """(frame index, clip number) read back from a (3, S, S) network image."""
    red, green = ((image[:2].mean(dim=(1, 2)) + 1) / 2 * 255).tolist()
    return round((red - 8) / STEP_T), round((green - 12) / STEP_C)


def mel_code(window: torch.Tensor) -> tuple[int, int]:
    """(first mel row, clip number) of a (1, 80, 20) window."""
    return int(window[0, 0, 0]), int(window[0, 1, 0])


@pytest.fixture(scope="module")
def coded(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coded")
    write_coded_dataset(root, factors=True)
    return root


def dataset(root: Path, split: str = "train", **options) -> TalkingHeadDataset:
    options = {"image_size": 32, "samples_per_epoch": 24, "seed": 7, "cache_mb": 64,
               "augment": {}} | options
    return TalkingHeadDataset(root, split, **options)


def same_samples(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].nan_to_num(), b[k].nan_to_num())
                                        for k in a)


# ---------------------------------------------------------------- crop_points


@pytest.mark.parametrize(("src", "size", "crop"), [(256, 64, True), (224, 224, True),
                                                   (100, 224, True), (128, 64, False)])
def test_crop_points_lands_where_the_crop_moves_a_bright_pixel(src, size, crop):
    rng = np.random.default_rng(src + size)
    for x, y in rng.integers(int(0.2 * src), int(0.75 * src), (5, 2)):
        img = np.zeros((src, src, 3), dtype=np.uint8)
        img[y - 1: y + 2, x - 1: x + 2] = 255
        weight = (prepare_image(img, size, crop)[0] + 1) / 2  # (size, size)
        rows, cols = np.mgrid[:size, :size]
        centre = np.array([(weight * cols).sum(), (weight * rows).sum()]) / weight.sum()
        np.testing.assert_allclose(crop_points(np.array([x, y]), src, size, crop), centre,
                                   atol=0.15)


# ---------------------------------------------------------------- index


def test_index_groups_clips_without_reading_videos_or_labels(coded, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the index must not open clips when it is built")

    monkeypatch.setattr("pdfgc.data.datasets.read_labels", forbidden)
    monkeypatch.setattr("pdfgc.data.datasets.FrameSource", forbidden)
    index = ClipIndex.from_manifest(coded)
    assert index.identities("train") == ("a", "b", "c")
    assert index.identities("val") == ("d",)
    assert [index.records[i].clip for i in index.clips("train", "a")] == [
        f"a/{i}" for i in range(6)]
    assert len(index.clips("train")) == 8
    assert index.clips("nope") == ()


def test_index_reads_each_label_file_once(coded, monkeypatch):
    reads = Counter()

    def counting(path):
        reads[Path(path).name] += 1
        return read_labels(path)

    monkeypatch.setattr("pdfgc.data.datasets.read_labels", counting)
    index = ClipIndex.from_manifest(coded)
    first = index.labels(0)
    assert index.labels(0) is first
    assert reads == {"0.npz": 1}
    ds = dataset(index, negatives=2)
    ds[0]
    assert sum(reads.values()) <= 3  # a sample reads its clip and at most one other clip


# ---------------------------------------------------------------- samples


def test_sample_keys_shapes_and_ranges(coded):
    ds = dataset(coded, augment=None)
    sample = ds[3]
    s = 32
    shapes = {
        "source": (3, s, s), "target": (3, s, s), "target_motion": (3, s, s),
        "target_motion2": (3, s, s), "mel": (1, 80, 20), "mel_negatives": (4, 1, 80, 20),
        "window": (K, 3, s, s), "window_mel": (K, 1, 80, 20), "eye_anchor": (3, s, s),
        "eye_positive": (3, s, s), "eye_negative": (3, s, s), "pose": (6,), "blink": (),
        "gaze": (2,), "gaze_known": (), "landmarks": (68, 2), "identity": (), "clip": (),
        "frame": (), "factors": (2,), "window_factors": (K, 2),
    }
    assert {k: tuple(v.shape) for k, v in sample.items()} == shapes
    for key in ("source", "target", "target_motion", "window", "eye_anchor"):
        assert sample[key].dtype == torch.float32
        assert -1 <= sample[key].min() and sample[key].max() <= 1
    assert sample["gaze_known"].dtype == torch.bool and sample["identity"].dtype == torch.int64
    assert ds.factor_names == ("t", "m")
    t = int(sample["frame"])
    labels = read_labels(coded / f"{ds.index.records[int(sample['clip'])].clip}.npz")
    np.testing.assert_allclose(sample["landmarks"],
                               crop_points(labels["landmarks"][t], SIZE, s), atol=1e-5)
    assert bool(sample["gaze_known"]) == (t % 2 == 1)
    np.testing.assert_array_equal(sample["pose"], labels["pose"][t])
    np.testing.assert_array_equal(sample["window_factors"][:, 0], np.arange(t - 2, t + 3))


def test_frames_are_the_target_its_window_and_another_frame_of_the_clip(coded):
    ds = dataset(coded)
    for i in range(12):
        sample = ds[i]
        t, clip = int(sample["frame"]), int(sample["clip"])
        assert frame_code(sample["target"]) == (t, clip)
        assert [frame_code(w) for w in sample["window"]] == [(u, clip) for u in
                                                             range(t - 2, t + 3)]
        assert torch.equal(sample["window"][K // 2], sample["target"])
        source_t, source_clip = frame_code(sample["source"])
        assert source_clip == clip and source_t != t
        assert int(sample["identity"]) == ds.identities.index(ds.index.records[clip].identity)


def test_source_identity_draws_the_source_from_another_clip_of_the_speaker(coded):
    ds = dataset(coded, source="identity")
    by_identity = {}
    for i in range(24):
        sample = ds[i]
        clip = int(sample["clip"])
        identity = ds.index.records[clip].identity
        _, source_clip = frame_code(sample["source"])
        assert ds.index.records[source_clip].identity == identity
        by_identity.setdefault(identity, set()).add(source_clip != clip)
        assert frame_code(sample["target"]) == (int(sample["frame"]), clip)
    assert by_identity["a"] == {True}  # six clips: always another one
    assert by_identity["b"] == {False}  # a single clip: its own, as with source="clip"
    with pytest.raises(PdfgcError, match="data.source='speaker': expected one of clip, identity"):
        dataset(coded, source="speaker")


def test_mel_window_of_frame_t_starts_at_row_4_t_minus_2(coded):
    ds = dataset(coded, samples_per_epoch=200)
    short = [r.clip for r in ds.index.records].index(SHORT_CLIP)
    seen_short = False
    for i in range(200):
        sample = ds[i]
        t, clip = int(sample["frame"]), int(sample["clip"])
        assert mel_code(sample["mel"]) == (4 * (t - 2), clip)
        assert [mel_code(w) for w in sample["window_mel"]] == [
            (4 * (u - 2), clip) for u in range(t - 2, t + 3)]
        mel_rows = 4 * 12 + 8 if clip == short else 4 * FRAMES + 8
        assert t - 2 >= 2 and t + 2 < FRAMES  # the whole window is inside the clip ...
        assert 4 * (t + 2 - 2) + 20 <= mel_rows  # ... and inside its mel
        seen_short |= clip == short
    assert seen_short


def test_negatives_come_from_other_times_and_other_clips(coded):
    ds = dataset(coded, negatives=5)
    for i in range(12):
        sample = ds[i]
        t, clip = int(sample["frame"]), int(sample["clip"])
        codes = [mel_code(w) for w in sample["mel_negatives"]]
        same = [row for row, c in codes if c == clip]
        assert len(same) == 3  # half, rounded up
        assert all(abs(row // 4 + 2 - t) >= 5 and row % 4 == 0 for row in same)
        assert all(row % 4 == 0 for row, _ in codes)


@pytest.mark.parametrize("source", ["clip", "identity"])
def test_eye_anchor_is_negative_with_positive_eyes_pasted(coded, source):
    ds = dataset(coded, image_size=48, source=source)
    for i in range(6):
        sample = ds[i]
        anchor, pos, neg = (sample[k] for k in ("eye_anchor", "eye_positive", "eye_negative"))
        assert torch.equal(pos, sample["target"])
        # the negative is another frame of the target's clip, whatever clip the source is of
        neg_t, neg_clip = frame_code(neg)
        assert neg_clip == int(sample["clip"]) and neg_t != int(sample["frame"])
        assert torch.equal(neg, sample["source"]) == (source == "clip" or ds.index.records[
            neg_clip].identity != "a")  # "a" has other clips; "b" and "c" have one
        pasted = (anchor == pos).all(dim=0)
        assert torch.equal(pasted, ~(anchor == neg).all(dim=0))  # frames differ everywhere
        t = int(sample["frame"])
        boxes = EYES + t % 3  # the target's boxes in stored pixels
        mapped = crop_points(boxes.reshape(-1, 2), SIZE, 48).reshape(-1, 4)
        expected = torch.zeros(48, 48, dtype=torch.bool)
        for x0, y0, x1, y1 in mapped:  # every touched pixel, no more
            expected[int(np.floor(y0)): int(np.ceil(y1)) + 1,
                     int(np.floor(x0)): int(np.ceil(x1)) + 1] = True
        assert torch.equal(pasted, expected)


def test_motion_copies_are_two_different_augmentations_of_the_target(coded):
    ds = dataset(coded, augment={"brightness": 0.5, "contrast": 0.4, "hue": 0.4,
                                 "perspective": 0.1, "perspective_p": 1.0})
    sample = ds[0]
    assert not torch.equal(sample["target_motion"], sample["target"])
    assert not torch.equal(sample["target_motion"], sample["target_motion2"])
    assert same_samples(sample, ds[0])
    plain = dataset(coded, augment=None)[0]
    assert torch.equal(plain["target_motion"], plain["target"])


def test_motion_augment_is_seeded_and_each_extra_does_something():
    image = prepare_image(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8), 64)
    extras = [{"channel_scale": 0.3}, {"aspect": 0.3}, {"median_blur_p": 1.0},
              {"sharpen_p": 1.0}, {"perspective": 0.2, "perspective_p": 1.0}, {"hue": 0.3}]
    for extra in extras:
        augment = replace(MotionAugment.from_config(None), **extra)  # this one alone
        out = augment(image, np.random.default_rng(1))
        assert out.shape == image.shape and out.dtype == np.float32
        assert np.abs(out - image).mean() > 0.01, extra
        np.testing.assert_array_equal(out, augment(image, np.random.default_rng(1)))
    warped = replace(MotionAugment.from_config(None), perspective=0.2, perspective_p=1.0)(
        np.ones_like(image), np.random.default_rng(0))
    assert warped[:, 0, 0].max() < 0 and warped[:, 32, 32].min() == 1  # corners go black
    with pytest.raises(PdfgcError, match="unknown option"):
        MotionAugment.from_config({"brightnes": 0.5})


# ---------------------------------------------------------------- sampling


def test_same_seed_same_samples_other_seed_or_epoch_differs(coded):
    a, b = dataset(coded, seed=1), dataset(coded, seed=1)
    assert all(same_samples(a[i], b[i]) for i in range(4))
    other = dataset(coded, seed=2)
    assert not all(same_samples(a[i], other[i]) for i in range(4))
    b.set_epoch(1)
    assert not all(same_samples(a[i], b[i]) for i in range(4))
    uncached = dataset(coded, seed=1, cache_mb=0)  # decoding on demand gives the same frames
    assert all(same_samples(a[i], uncached[i]) for i in range(4))


def test_samples_do_not_depend_on_workers(coded):
    def batches(workers):
        loader = DataLoader(dataset(coded, samples_per_epoch=12), batch_size=4,
                            num_workers=workers)
        return list(loader)

    for one, two in zip(batches(0), batches(2), strict=True):
        assert same_samples(one, two)


def test_sampling_is_identity_balanced(coded):
    ds = dataset(coded, samples_per_epoch=600, image_size=16, emotion_window=1, negatives=0)
    counts = Counter(int(ds[i]["identity"]) for i in range(len(ds)))
    assert sorted(counts) == [0, 1, 2]
    assert all(150 <= n <= 250 for n in counts.values()), counts  # "a" has 6 of the 8 clips


def test_two_ranks_split_the_epoch_disjointly_and_completely(coded):
    def datamodule():
        dm = VoxCeleb2DataModule(coded, image_size=16, batch_size=4, num_workers=0,
                                 samples_per_epoch={"train": 20}, seed=7)
        dm.setup("fit")
        return dm

    dm = datamodule()
    train = dm.train_dataloader()
    ranks = [list(_get_distributed_sampler(train, shuffle=_is_dataloader_shuffled(train),
                                           overfit_batches=0, num_replicas=2, rank=rank))
             for rank in range(2)]  # what Lightning injects under DDP
    assert not set(ranks[0]) & set(ranks[1])
    assert sorted(ranks[0] + ranks[1]) == list(range(20))
    other_rank = datamodule().dataset("train")  # each rank builds its own copy
    assert all(same_samples(dm.dataset("train")[i], other_rank[i]) for i in ranks[1][:3])


# ---------------------------------------------------------------- broken data


def test_unreadable_clips_are_skipped_counted_and_the_epoch_completes(tmp_path, caplog):
    records = write_coded_dataset(tmp_path)
    (tmp_path / "a/1.mp4").write_bytes(b"not a video")
    (tmp_path / "a/2.npz").write_bytes(b"not an npz")
    bad = {1, 2}
    for workers in (0, 2):
        ds = dataset(tmp_path, samples_per_epoch=24, cache_mb=0)
        clips = [int(c) for batch in DataLoader(ds, batch_size=6, num_workers=workers)
                 for c in batch["clip"]]
        assert len(clips) == 24 and not bad & set(clips)
        assert ds.skipped > 0
    assert records[1].clip == "a/1"
    assert "skipping clip a/1: " in caplog.text and "skipping clip a/2: " in caplog.text


def test_a_dataset_of_only_unreadable_clips_is_a_clear_error(tmp_path):
    write_coded_dataset(tmp_path, {"a": ("train", 1), "d": ("val", 1)})
    (tmp_path / "a/0.mp4").write_bytes(b"")
    with pytest.raises(PdfgcError, match="unreadable clips"):
        dataset(tmp_path)[0]


# ---------------------------------------------------------------- DataModule


def test_missing_manifest_or_empty_split_is_a_one_line_error(tmp_path, coded):
    with pytest.raises(PdfgcError, match="no manifest"):
        VoxCeleb2DataModule(tmp_path / "nothing").setup("fit")
    write_coded_dataset(tmp_path, {"a": ("train", 1)})
    with pytest.raises(PdfgcError, match="no clips in split 'val'"):
        VoxCeleb2DataModule(tmp_path).setup("fit")


def test_loaders_follow_the_splits_and_settings(coded):
    dm = VoxCeleb2DataModule(coded, image_size=16, batch_size=3, num_workers=0,
                             samples_per_epoch={"train": 7, "val": 5}, seed=3)
    dm.setup("fit")
    dm.setup("test")
    train, val, test = dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()
    assert len(train) == 2 and len(val) == 2 and len(test) == 1  # train drops the last batch
    assert not train.persistent_workers and not train.pin_memory
    assert {dm.index.records[int(c)].identity for c in next(iter(val))["clip"]} == {"d"}
    assert {dm.index.records[int(c)].identity for c in next(iter(test))["clip"]} == {"e"}


def test_prepare_data_generates_synthetic_data_through_ensure_dataset(tmp_path, monkeypatch):
    calls = []
    module = types.ModuleType("pdfgc.data.synthetic.generate")
    module.ensure_dataset = lambda root, **params: calls.append((root, params))
    monkeypatch.setitem(sys.modules, "pdfgc.data.synthetic.generate", module)
    VoxCeleb2DataModule(tmp_path, generate={"num_identities": 3, "seed": 0}).prepare_data()
    VoxCeleb2DataModule(tmp_path, generate=None).prepare_data()
    assert calls == [(tmp_path, {"num_identities": 3, "seed": 0})]


class RecordClips(pl.LightningModule):
    """Records the clip and frame of every training and validation sample, per epoch."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: dict[tuple[str, int], list] = {}

    def _record(self, split: str, batch: dict) -> None:
        pairs = zip(batch["clip"].tolist(), batch["frame"].tolist(), strict=True)
        self.seen.setdefault((split, self.current_epoch), []).extend(pairs)

    def training_step(self, batch, batch_idx):
        self._record("train", batch)
        return self.weight * batch["target"].mean()

    def validation_step(self, batch, batch_idx):
        self._record("val", batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_moves_persistent_workers_to_each_epoch(coded, tmp_path):
    dm = VoxCeleb2DataModule(coded, image_size=16, batch_size=4, num_workers=2,
                             samples_per_epoch={"train": 8, "val": 4}, seed=5, augment=None)
    module = RecordClips()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0,
                         default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    assert sum(isinstance(c, DataEpochCallback) for c in trainer.callbacks) == 1
    reference = dm.dataset("train")
    for epoch in (0, 1):
        reference.set_epoch(epoch)
        expected = [(int(s["clip"]), int(s["frame"])) for s in map(reference.__getitem__,
                                                                    range(8))]
        assert module.seen["train", epoch] == expected
    assert module.seen["train", 0] != module.seen["train", 1]
    assert module.seen["val", 0] == module.seen["val", 1]  # validation is the same every time
    assert len(module.seen["val", 0]) == 4


@pytest.mark.parametrize("name", ["synthetic", "voxceleb2"])
def test_data_configs_compose_and_instantiate(name, monkeypatch, tmp_path):
    monkeypatch.setenv("PDFGC_ROOT", str(tmp_path))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(overrides=[f"+data={name}", "+paths=default"])
    dm = instantiate(cfg.data)
    assert isinstance(dm, VoxCeleb2DataModule)
    assert dm.root == tmp_path / "data" / name
    size = {"synthetic": 64, "voxceleb2": 224}[name]
    assert dm.dataset_options["image_size"] == size
    assert dm.dataset_options["augment"]["brightness"] == 0.5
    if name == "synthetic":
        assert dm.generate["image_size"] == 64 and dm.generate["num_identities"] == 208
        assert dm.batch_size == 16 and dm.num_workers == 0
        assert dm.dataset_options["source"] == "clip"  # as released; experiment=demo: identity
    else:
        assert dm.generate is None and dm.batch_size == 32 and dm.num_workers == 8


def test_synthetic_data_is_generated_on_prepare_and_loads(tmp_path):
    generate = {"num_identities": 4, "clips_per_identity": 2, "seconds": 1.0,
                "image_size": 32, "val_identities": 1, "test_identities": 1, "seed": 0,
                "workers": 1}
    dm = VoxCeleb2DataModule(tmp_path / "synthetic", image_size=32, batch_size=4,
                             num_workers=0, samples_per_epoch={"train": 4, "val": 2},
                             generate=generate, cache_mb=16)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    train = dm.dataset("train")
    assert len(train.identities) == 2 and train.skipped == 0
    assert "blink" in train.factor_names
    assert batch["factors"].shape == (4, len(train.factor_names))
    assert batch["window"].shape == (4, K, 3, 32, 32)
    clip, t = int(batch["clip"][0]), int(batch["frame"][0])
    factors = read_labels(tmp_path / "synthetic" / dm.index.records[clip].labels)["factors"]
    np.testing.assert_array_equal(batch["window_factors"][0], factors[t - 2: t + 3])
