"""The training losses against hand-computed values; no weights are downloaded."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from pdfgc.errors import PdfgcError
from pdfgc.losses import (
    CodeDecorrelationLoss,
    DecorrelationLoss,
    EyeTripletLoss,
    FacePartsL1Loss,
    FeatureMatchingLoss,
    HingeGANLoss,
    LandmarkHeatmapLoss,
    MaskedRegression,
    MotionConsistencyLoss,
    ReconstructionLoss,
    SymmetricInfoNCE,
    TrunkPerceptualLoss,
    VGGPerceptualLoss,
)
from pdfgc.losses.landmarks import gaussian_heatmaps
from pdfgc.losses.reconstruction import face_parts_mask
from pdfgc.networks import build_networks

from conftest import model_config


def _logit_map(*values: float) -> torch.Tensor:
    return torch.tensor(values).view(1, 1, 1, -1)


# --- GAN ---------------------------------------------------------------------------------

def test_hinge_discriminator_and_generator_by_hand():
    gan = HingeGANLoss()
    real = [_logit_map(2.0, -0.5), _logit_map(0.0)]
    fake = [_logit_map(-3.0, 0.5), _logit_map(0.0)]
    # scale 1: real relu(1-r) = (0 + 1.5)/2, fake relu(1+f) = (0 + 1.5)/2; scale 2: 1 and 1
    loss, logs = gan.discriminator(real, fake)
    assert loss.item() == pytest.approx((0.75 + 1.0) / 2 + (0.75 + 1.0) / 2)
    assert logs["d_real"].item() == pytest.approx(0.875)
    assert logs["fake_score"].item() == pytest.approx((-1.25 + 0.0) / 2)
    g_loss, g_logs = gan.generator(fake)
    assert g_loss.item() == pytest.approx(-((-3.0 + 0.5) / 2 + 0.0) / 2)
    assert gan(fake)[0].item() == g_loss.item() == g_logs["g"].item()
    one_scale, _ = gan.discriminator(real[:1], fake[:1])
    assert one_scale.item() == pytest.approx(1.5)


def test_hinge_takes_raw_discriminator_outputs():
    torch.manual_seed(0)
    disc = build_networks(model_config("tiny"), names=("discriminator",))["discriminator"]
    real_out, fake_out = disc(torch.rand(2, 3, 64, 64)), disc(torch.rand(2, 3, 64, 64))
    gan = HingeGANLoss()
    raw, _ = gan.discriminator(real_out, fake_out)
    logits, _ = gan.discriminator([s[-1] for s in real_out], [s[-1] for s in fake_out])
    assert raw.item() == logits.item()
    assert gan.generator(fake_out)[0].item() == -torch.stack(
        [s[-1].mean() for s in fake_out]).mean().item()


def test_feature_matching_by_hand():
    real = [[torch.zeros(1, 1, 2, 2), torch.tensor([1.0, 2.0]), torch.tensor([100.0])],
            [torch.zeros(1, 1, 1, 1), torch.tensor([5.0]), torch.tensor([-100.0])]]
    fake = [[torch.ones(1, 1, 2, 2), torch.tensor([2.0, 4.0]), torch.tensor([0.0])],
            [torch.full((1, 1, 1, 1), 3.0), torch.tensor([5.0]), torch.tensor([0.0])]]
    for tensor in real[0] + fake[0]:
        tensor.requires_grad_(True)
    real_image, fake_image = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5)
    loss, logs = FeatureMatchingLoss(image_weight=2.0)(real, fake, real_image, fake_image)
    # scale 1: 1 + 1.5, scale 2: 3 + 0 (logits ignored) -> mean 2.75; pixel 0.5 * 2
    assert loss.item() == pytest.approx(2.75 + 1.0)
    assert logs["feat"].item() == pytest.approx(2.75)
    assert logs["pixel"].item() == pytest.approx(0.5)
    loss.backward()
    assert all(t.grad is None for t in real[0])
    assert fake[0][0].grad.abs().sum() > 0
    same, _ = FeatureMatchingLoss()(real, real, real_image, real_image)
    assert same.item() == 0.0


# --- lip-sync InfoNCE ----------------------------------------------------------------------

def _reference_direction(anchor, candidates, temperature):
    """Cross-entropy of anchor i against all candidates, similarity 1 / Euclidean distance."""
    distance = torch.cdist(F.normalize(anchor, dim=1), F.normalize(candidates, dim=1))
    return F.cross_entropy(1 / distance / temperature, torch.arange(len(anchor)))


@pytest.mark.parametrize("similarity", ["inv_euclidean", "cosine"])
def test_infonce_matching_orthonormal_pairs_cost_nothing(similarity):
    basis = torch.eye(8)[:4] * 3.0  # unnormalised on purpose
    loss, logs = SymmetricInfoNCE(temperature=0.01, similarity=similarity)(basis, basis)
    assert loss.item() < 1e-3
    assert logs["acc"].item() == 1.0


@pytest.mark.parametrize("similarity", ["inv_euclidean", "cosine"])
def test_infonce_uninformative_pairs_cost_log_batch(similarity):
    video, audio = torch.eye(8)[:4], torch.eye(8)[4:]  # every pair equally far apart
    loss, logs = SymmetricInfoNCE(similarity=similarity)(video, audio)
    assert loss.item() == pytest.approx(math.log(4), abs=1e-5)
    negatives = torch.eye(20)[8:].view(4, 3, 20)  # orthogonal to everything
    pad = torch.zeros(4, 12)
    loss, logs = SymmetricInfoNCE(similarity=similarity)(
        torch.cat([video, pad], 1), torch.cat([audio, pad], 1), negatives)
    assert logs["a2v"].item() == pytest.approx(math.log(4), abs=1e-5)
    assert logs["v2a"].item() == pytest.approx(math.log(4 + 3), abs=1e-5)


def test_infonce_shuffled_pairs_are_wrong():
    video = torch.eye(8)[:4]
    loss, logs = SymmetricInfoNCE(temperature=0.1)(video, video[[1, 2, 3, 0]])
    assert logs["acc"].item() == 0.0
    assert loss.item() > math.log(4) + 1


def test_infonce_hard_negatives_count_for_video_to_audio():
    video = torch.eye(8)[:4]
    negatives = video.unsqueeze(1)  # (B, 1, D): a negative as close as the positive
    _, logs = SymmetricInfoNCE(temperature=0.01)(video, video, negatives)
    assert logs["a2v"].item() < 1e-3
    assert logs["v2a"].item() == pytest.approx(math.log(2), abs=1e-3)


def test_infonce_equals_reference_on_random_vectors():
    torch.manual_seed(0)
    video, audio = torch.randn(6, 16), torch.randn(6, 16)
    loss, logs = SymmetricInfoNCE(temperature=0.5)(video, audio)
    a2v = _reference_direction(audio, video, 0.5)
    v2a = _reference_direction(video, audio, 0.5)
    assert logs["a2v"].item() == pytest.approx(a2v.item(), rel=1e-4)
    assert loss.item() == pytest.approx(((a2v + v2a) / 2).item(), rel=1e-4)


def test_infonce_detach_stops_audio_to_video_gradients_into_video():
    torch.manual_seed(0)
    video, audio = torch.randn(5, 16, requires_grad=True), torch.randn(5, 16, requires_grad=True)
    grads = {}
    for detach in (True, False, None):  # None: the default, which must be the released True
        video.grad = audio.grad = None
        options = {} if detach is None else {"detach": detach}
        SymmetricInfoNCE(temperature=0.5, **options)(video, audio)[0].backward()
        grads[detach] = video.grad.clone(), audio.grad.clone()
    assert torch.equal(grads[None][0], grads[True][0])
    v2a_only = torch.autograd.grad(_reference_direction(video, audio.detach(), 0.5) / 2, video)[0]
    a2v_only = torch.autograd.grad(_reference_direction(audio, video.detach(), 0.5) / 2, audio)[0]
    assert torch.allclose(grads[True][0], v2a_only, atol=1e-6)
    assert torch.allclose(grads[True][1], a2v_only, atol=1e-6)
    assert not torch.allclose(grads[False][0], v2a_only, atol=1e-4)


def test_infonce_mse_pulls_audio_onto_detached_video():
    video, audio = torch.ones(2, 4, requires_grad=True), torch.zeros(2, 4, requires_grad=True)
    plain, _ = SymmetricInfoNCE()(video, audio)
    loss, logs = SymmetricInfoNCE(mse_weight=0.5)(video, audio)
    assert logs["mse"].item() == 1.0
    assert loss.item() == pytest.approx(plain.item() + 0.5)


def test_infonce_rejects_unknown_similarity():
    with pytest.raises(PdfgcError, match="similarity='dot'"):
        SymmetricInfoNCE(similarity="dot")


# --- eye triplet ---------------------------------------------------------------------------

def test_eye_triplet():
    e = torch.eye(4)[:2]
    loss, logs = EyeTripletLoss(margin=0.5)(e, e, -e)  # d_pos 0, d_neg 2 > margin
    assert loss.item() == pytest.approx(0.0, abs=1e-5)
    assert logs["acc"].item() == 1.0
    loss, logs = EyeTripletLoss(margin=0.5)(e, -e, e)  # d_pos 2, d_neg 0
    assert loss.item() == pytest.approx(2.5, abs=1e-4)
    assert logs["acc"].item() == 0.0
    near = F.normalize(e + 0.1 * torch.eye(4)[2:], dim=1)  # inside the margin
    assert EyeTripletLoss(margin=0.5)(e, e, near)[0].item() > 0.3


def test_eye_triplet_normalize_ignores_scale():
    e = torch.eye(4)[:2]
    assert EyeTripletLoss(margin=0.5)(e, 10 * e, -e)[0].item() == pytest.approx(0.0, abs=1e-5)
    raw, _ = EyeTripletLoss(margin=0.5, normalize=False)(e, 10 * e, -e)
    assert raw.item() == pytest.approx(9 - 2 + 0.5, abs=1e-4)


# --- decorrelation -------------------------------------------------------------------------

def _fill(loss: DecorrelationLoss, a: torch.Tensor, b: torch.Tensor, batch: int):
    for start in range(0, len(a), batch):
        out = loss(a[start:start + batch], b[start:start + batch])
    return out


def test_decorrelation_small_for_independent_large_for_correlated():
    torch.manual_seed(0)
    a = torch.randn(2304, 4)
    independent, logs = _fill(DecorrelationLoss(2048, 4, 6), a, torch.randn(2304, 6), 256)
    assert logs["bank"].item() == 2048
    assert independent.item() < 0.05  # expected about 4 * 6 / 2304
    mixing = torch.randn(4, 6)
    correlated, logs = _fill(DecorrelationLoss(2048, 4, 6), a, a @ mixing, 256)
    assert correlated.item() > 1.0
    assert logs["max_corr"].item() > 0.5
    same, _ = DecorrelationLoss(0, 4, 4)(a, a)  # perfectly correlated: trace of ones
    assert same.item() == pytest.approx(4.0, rel=1e-3)


def test_decorrelation_bank_is_a_queue():
    loss = DecorrelationLoss(5, 1, 1)
    first, second = torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[4.0], [5.0], [6.0]])
    loss(first, -first)
    assert loss.filled == 3 and loss.bank_a[:3, 0].tolist() == [1, 2, 3]
    loss(second, -second)
    assert loss.filled == 5
    assert loss.bank_a[:, 0].tolist() == [6, 2, 3, 4, 5]
    assert loss.bank_b[:, 0].tolist() == [-6, -2, -3, -4, -5]
    loss(torch.arange(10.0, 17.0).view(7, 1), torch.zeros(7, 1))  # longer than the bank
    assert sorted(loss.bank_a[:, 0].tolist()) == [12, 13, 14, 15, 16]
    loss.eval()
    loss(torch.zeros(2, 1), torch.zeros(2, 1))
    assert sorted(loss.bank_a[:, 0].tolist()) == [12, 13, 14, 15, 16]


def test_decorrelation_bank_is_saved_and_restored_with_the_module():
    loss = DecorrelationLoss(5, 1, 1)
    for rows in (torch.arange(1.0, 4.0).view(3, 1), torch.arange(4.0, 8.0).view(4, 1)):
        loss(rows, -rows)
    restored = DecorrelationLoss(5, 1, 1)
    restored.load_state_dict(loss.state_dict())
    assert (restored.filled, restored.cursor) == (5, 2)
    assert torch.equal(restored.bank_a, loss.bank_a) and torch.equal(restored.bank_b, loss.bank_b)
    new = torch.tensor([[9.0], [10.0]])
    assert torch.equal(restored(new, -new)[0], loss(new, -new)[0])
    older = nn.ModuleDict({"decorrelation": DecorrelationLoss(5, 1, 1)})
    older.load_state_dict({})  # a checkpoint saved before banks were: strict, and empty
    assert older["decorrelation"].filled == 0


def test_decorrelation_gradient_through_current_batch_only():
    torch.manual_seed(0)
    loss = DecorrelationLoss(64, 3, 3)
    old_a, old_b = torch.randn(16, 3, requires_grad=True), torch.randn(16, 3, requires_grad=True)
    loss(old_a, old_a.detach() + old_b)
    new_a, new_b = torch.randn(16, 3, requires_grad=True), torch.randn(16, 3, requires_grad=True)
    value, _ = loss(new_a, new_b)
    value.backward()
    assert old_a.grad is None and old_b.grad is None
    assert new_a.grad.abs().sum() > 0 and new_b.grad.abs().sum() > 0
    assert not loss.bank_a.requires_grad


def test_code_decorrelation_small_for_independent_codes_large_for_a_function_of_pose():
    torch.manual_seed(0)
    pose, eye = torch.randn(4096, 6), torch.randn(4096, 6)
    loss = CodeDecorrelationLoss()
    independent, logs = loss({"mouth": torch.randn(4096, 32), "eye": eye}, {"pose": pose})
    assert set(logs) == {"mouth_pose", "eye_pose"}
    assert independent.item() < 0.002  # about 1 / 4096 per dimension pair
    leaky = pose @ torch.randn(6, 32)  # every dimension a linear function of the pose
    correlated, logs = loss({"mouth": leaky, "eye": eye}, {"pose": pose})
    assert logs["mouth_pose"].item() > 0.1 and logs["eye_pose"].item() < 0.002
    assert correlated.item() == pytest.approx(
        (logs["mouth_pose"].item() + logs["eye_pose"].item()) / 2)
    one, _ = loss({"pose_copy": pose[:, :1]}, {"pose": pose[:, :1]})
    assert one.item() == pytest.approx(1.0, abs=1e-4)


def test_code_decorrelation_bank_removes_the_small_batch_noise_floor():
    torch.manual_seed(0)
    dims = {"mouth": 4, "eye": 3, "pose": 6}

    def last_of(loss, leak: float) -> float:
        for _ in range(64):  # batches of 8; the bank then holds the last 256 samples
            pose = torch.randn(8, 6)
            mouth = torch.randn(8, 4) + leak * pose[:, :4]
            value, _ = loss({"mouth": mouth}, {"pose": pose})
        return value.item()

    assert last_of(CodeDecorrelationLoss(), 0.0) > 0.05  # about 1 / 8 from noise alone
    banked = CodeDecorrelationLoss(256, dims)
    assert last_of(banked, 0.0) < 0.01  # about 1 / 264
    assert banked.filled == 256 and "bank_pose" in banked.state_dict()
    assert last_of(CodeDecorrelationLoss(256, dims), 1.0) > 0.05  # a real leak still shows
    banked.eval()
    banked({"mouth": torch.randn(8, 4)}, {"pose": torch.randn(8, 6)})
    assert banked.cursor == 0  # evaluation does not enqueue (64 x 8 wrapped round to 0)


def test_code_decorrelation_gradient_reaches_the_batch_not_the_bank():
    torch.manual_seed(0)
    loss = CodeDecorrelationLoss(16, {"mouth": 3, "pose": 2})
    old = torch.randn(8, 3, requires_grad=True)
    loss({"mouth": old}, {"pose": torch.randn(8, 2)})
    new = torch.randn(8, 3, requires_grad=True)
    value, _ = loss({"mouth": new}, {"pose": new.detach()[:, :2] + torch.randn(8, 2)})
    value.backward()
    assert old.grad is None and new.grad.abs().sum() > 0


def test_code_decorrelation_gradient_reaches_the_codes_not_the_reference():
    torch.manual_seed(0)
    pose = torch.randn(16, 6, requires_grad=True)
    code = (pose.detach() @ torch.randn(6, 4)).requires_grad_(True)
    value, _ = CodeDecorrelationLoss()({"eye": code}, {"pose": pose})
    value.backward()
    assert pose.grad is None
    assert code.grad.abs().sum() > 0


# --- regression and motion -----------------------------------------------------------------

def test_masked_regression_ignores_nan_and_masked_rows():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], requires_grad=True)
    target = torch.tensor([[0.0, float("nan")], [1.0, 1.0], [0.0, 0.0]])
    loss, logs = MaskedRegression("l1")(pred, target)
    assert loss.item() == pytest.approx((1 + 2 + 3 + 5 + 6) / 5)
    assert logs["known"].item() == pytest.approx(5 / 6)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[0, 1] == 0
    mse, _ = MaskedRegression("mse")(pred, target, mask=torch.tensor([True, True, False]))
    assert mse.item() == pytest.approx((1 + 4 + 9) / 3)


def test_masked_regression_with_nothing_known_is_zero_with_finite_gradients():
    pred = torch.ones(2, 2, requires_grad=True)
    loss, _ = MaskedRegression("mse")(pred, torch.full((2, 2), float("nan")))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(pred.grad, torch.zeros(2, 2))
    with pytest.raises(PdfgcError, match="kind='l2'"):
        MaskedRegression("l2")


@pytest.mark.parametrize("kind", ["correlation", "cosine", "l1"])
def test_motion_consistency(kind):
    torch.manual_seed(0)
    f = torch.randn(4, 8)
    assert MotionConsistencyLoss(kind)(f, f.clone())[0].item() == pytest.approx(0.0, abs=1e-6)
    loss, logs = MotionConsistencyLoss(kind)(f, -f)
    assert loss.item() == pytest.approx(2 * f.abs().mean().item() if kind == "l1" else 2.0)
    assert logs["cos"].item() == pytest.approx(-1.0)
    assert logs["corr"].item() == pytest.approx(-1.0)


@pytest.mark.parametrize("kind", ["correlation", "cosine"])
def test_motion_consistency_cannot_be_met_by_a_shared_offset(kind):
    """Features that agree only through a large common offset (the collapse plain cosine
    allows) score like unrelated features."""
    torch.manual_seed(0)
    offset = 100.0 * torch.randn(1, 8)
    f1, f2 = offset + torch.randn(64, 8), offset + torch.randn(64, 8)
    assert torch.nn.functional.cosine_similarity(f1, f2).mean() > 0.99  # plain cosine: met
    loss, _ = MotionConsistencyLoss(kind)(f1, f2)
    assert loss.item() == pytest.approx(1.0, abs=0.15)


def test_landmark_heatmaps_peak_at_the_points_and_zero_maps_score_one():
    points = torch.tensor([[[10.0, 30.0], [40.0, 8.0]]])  # x, y in a 64 px image
    maps = gaussian_heatmaps(points, size=16, image_size=64, sigma=1.0)
    assert maps.shape == (1, 2, 16, 16)
    peaks = [divmod(int(m.argmax()), 16) for m in maps[0]]  # (row, col)
    assert peaks == [(7, 2), (2, 10)]  # (30 + 0.5) / 4 - 0.5 = 7.1; (10 + 0.5) / 4 - 0.5 = 2.1
    loss = LandmarkHeatmapLoss(1.0)
    assert loss(torch.zeros(1, 2, 16, 16), points, 64)[0].item() == pytest.approx(1.0)
    assert loss(maps, points, 64)[0].item() == pytest.approx(0.0)
    shifted = gaussian_heatmaps(points + 8.0, 16, 64, 1.0)
    assert loss(shifted, points, 64)[0].item() > 1.0


def test_landmark_coordinate_term_is_the_soft_argmax_distance():
    """With a coordinate weight the loss adds the soft-argmax's distance to the landmark in
    heatmap pixels: near zero for maps peaked there, about 2 for peaks 8 image pixels (2 map
    pixels) away along x."""
    points = torch.tensor([[[20.0, 30.0], [40.0, 24.0]]])
    loss = LandmarkHeatmapLoss(1.0, coordinate_weight=0.5)
    exact = gaussian_heatmaps(points, 16, 64, 1.0)
    assert loss(exact, points, 64)[1]["distance"].item() < 0.25
    shifted = gaussian_heatmaps(points + torch.tensor([8.0, 0.0]), 16, 64, 1.0)
    total, parts = loss(shifted, points, 64)
    assert parts["distance"].item() == pytest.approx(2.0, abs=0.25)
    assert total.item() == pytest.approx(parts["heatmap"].item() + 0.5 * parts["distance"].item())
    assert LandmarkHeatmapLoss(1.0)(shifted, points, 64)[1] == {}


def test_points_after_the_68_ibug_ones_weigh_extra_weight():
    """A pupil (point 69) 8 image pixels off: with extra_weight 10 its error counts ten
    times an iBUG point's, in both the heatmap and the distance term (at 1 it is one point of
    70), and an iBUG point's error counts once, of 88."""
    points = 8.0 + 48.0 * torch.rand(1, 70, 2, generator=torch.Generator().manual_seed(0))
    exact = gaussian_heatmaps(points, 16, 64, 1.5)
    off = torch.zeros(1, 70, 2)
    off[0, 68, 0] = 8.0
    pupil_off = gaussian_heatmaps(points + off, 16, 64, 1.5)

    def parts(heatmaps, extra_weight):
        return LandmarkHeatmapLoss(1.5, 1.0, extra_weight)(heatmaps, points, 64)[1]

    def added(moved, extra_weight):  # what one point's error adds to each term
        a, b = parts(moved, extra_weight), parts(exact, extra_weight)
        return {k: a[k].item() - b[k].item() for k in a}

    plain, weighted = added(pupil_off, 1.0), added(pupil_off, 10.0)
    assert plain["distance"] == pytest.approx(2.0 / 70, rel=0.1)  # 2 map pixels, 1 of 70
    ibug_off = gaussian_heatmaps(points + off.roll(-1, dims=1), 16, 64, 1.5)  # point 68
    for term in ("heatmap", "distance"):
        assert weighted[term] == pytest.approx(plain[term] * 10 * 70 / 88, rel=0.02)
        assert added(ibug_off, 10.0)[term] == pytest.approx(
            added(ibug_off, 1.0)[term] * 70 / 88, rel=0.02)


def test_landmark_heatmap_count_must_match_the_labels():
    """70 maps for 70 labels (the synthetic data's pupils) work; 68 maps for 70 labels is a
    one-line user error naming the setting to change."""
    points = 4.0 + 56.0 * torch.rand(2, 70, 2)
    loss = LandmarkHeatmapLoss(1.0)
    assert loss(gaussian_heatmaps(points, 16, 64, 1.0), points, 64)[0].item() == pytest.approx(0.0)
    with pytest.raises(PdfgcError, match=r"model.motion.num_landmarks=70") as err:
        loss(torch.zeros(2, 68, 16, 16), points, 64)
    assert "\n" not in str(err.value)


# --- VGG and LPIPS -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A randomly initialised torchvision vgg19 saved in torchvision's file layout."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg19-random.pth"
    torch.save(torchvision.models.vgg19(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def vgg_loss(vgg_file, any_torchvision_weights):
    return VGGPerceptualLoss(str(vgg_file))


def test_vgg_zero_for_identical_positive_otherwise(vgg_loss):
    torch.manual_seed(0)
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    fake = (real + 0.3 * torch.randn_like(real)).requires_grad_(True)
    assert vgg_loss(real, real.clone())[0].item() == 0.0
    loss, logs = vgg_loss(fake, real)
    assert loss.item() > 0 and logs["vgg"].item() == loss.item()
    loss.backward()
    assert fake.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in vgg_loss.parameters())


def test_vgg_layers_and_normalisation_by_hand(vgg_file, any_torchvision_weights):
    reference = torchvision.models.vgg19(weights=None)
    reference.load_state_dict(torch.load(vgg_file, weights_only=True))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.manual_seed(1)
    fake, real = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1

    def layer_l1(end):  # L1 between features[:end] outputs of ImageNet-normalised images
        net = reference.features[:end]
        return F.l1_loss(net(((fake + 1) / 2 - mean) / std), net(((real + 1) / 2 - mean) / std))

    with torch.no_grad():
        first, _ = VGGPerceptualLoss(str(vgg_file), layer_weights=(1, 0, 0, 0, 0))(fake, real)
        last, _ = VGGPerceptualLoss(str(vgg_file), layer_weights=(0, 0, 0, 0, 2))(fake, real)
        assert first.item() == pytest.approx(layer_l1(2).item(), rel=1e-4)  # relu1_1
        assert last.item() == pytest.approx(2 * layer_l1(30).item(), rel=1e-4)  # relu5_1


def test_vgg_stays_frozen_and_out_of_checkpoints(vgg_loss):
    parent = nn.Module()
    parent.head = nn.Linear(2, 2)
    parent.vgg = vgg_loss
    parent.train()
    assert not vgg_loss.training
    state = parent.state_dict()
    assert set(state) == {"head.weight", "head.bias"}
    before = vgg_loss.blocks[0][0].weight.clone()
    parent.load_state_dict(state, strict=True)
    assert torch.equal(vgg_loss.blocks[0][0].weight, before)


def test_vgg_missing_or_wrong_weights_are_one_line_errors(tmp_path, monkeypatch,
                                                         any_torchvision_weights):
    missing = tmp_path / "nope.pth"
    with pytest.raises(PdfgcError) as err:
        VGGPerceptualLoss(str(missing))
    message = str(err.value)
    assert message.startswith(f"loss.vgg_weights: vgg19-dcbb9e9d.pth not found ({missing})")
    assert "\n" not in message
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    with pytest.raises(PdfgcError, match="vgg19-dcbb9e9d.pth not set, and not in .*torch"):
        VGGPerceptualLoss(None)
    wrong = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).features.state_dict(), wrong)
    with pytest.raises(PdfgcError, match="alexnet.pth"):
        VGGPerceptualLoss(str(wrong))
    with pytest.raises(PdfgcError, match="layer_weights"):
        VGGPerceptualLoss(str(wrong), layer_weights=(1, 1))


def save_motion(path, model) -> str:
    """A pdfgc checkpoint holding a randomly initialised motion encoder of ``model``."""
    motion = build_networks(model, names=("motion",))["motion"]
    torch.save({"state_dict": {f"nets.motion.{k}": v for k, v in motion.state_dict().items()}},
               path)
    return str(path)


@pytest.fixture(scope="module")
def trunk_loss(tmp_path_factory):
    """The trunk term on a tiny motion encoder (random weights)."""
    torch.manual_seed(0)
    model = model_config("tiny")
    return TrunkPerceptualLoss(model.motion,
                               save_motion(tmp_path_factory.mktemp("trunk") / "t.ckpt", model))


def test_trunk_perceptual_zero_for_identical_gradient_into_the_fake_only(trunk_loss):
    torch.manual_seed(0)
    real = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    assert trunk_loss(real.detach(), real.detach().clone())[0].item() == 0.0
    fake = (real.detach() + 0.3 * torch.randn_like(real)).requires_grad_(True)
    loss, logs = trunk_loss(fake, real)
    assert loss.item() > 0 and logs["trunk"].item() == loss.item()
    loss.backward()
    assert fake.grad.abs().sum() > 0 and real.grad is None
    assert all(p.grad is None and not p.requires_grad for p in trunk_loss.parameters())


def test_trunk_perceptual_is_frozen_in_eval_mode_and_out_of_checkpoints(trunk_loss):
    parent = nn.Module()
    parent.head = nn.Linear(2, 2)
    parent.trunk = trunk_loss
    parent.train()
    assert not trunk_loss.training and not trunk_loss.trunk.m0.dropout.training
    assert set(parent.state_dict()) == {"head.weight", "head.bias"}


def test_trunk_perceptual_needs_a_checkpoint_of_the_configured_trunk(tmp_path):
    model = model_config("tiny")
    with pytest.raises(PdfgcError, match="loss.trunk_perceptual needs loss.trunk_weights"):
        TrunkPerceptualLoss(model.motion, None)
    other = model_config("tiny")
    other.motion.width = 8
    path = save_motion(tmp_path / "other.ckpt", other)
    with pytest.raises(PdfgcError, match="other.ckpt \\[motion\\]: does not match"):
        TrunkPerceptualLoss(model.motion, path)


def test_reconstruction_l1_only_by_default():
    loss, logs = ReconstructionLoss()(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.5))
    assert loss.item() == pytest.approx(0.5) and set(logs) == {"l1"}


def face_points() -> torch.Tensor:
    """68 landmarks (1, 68, 2) on a 64 px image: eyes in x 16-24 and 40-48 at y 20-22, the mouth
    in x 24-40, y 44-50; every other point far from them, at the top-left corner."""
    points = torch.zeros(1, 68, 2)
    for part, (x0, x1, y0, y1) in ((slice(36, 42), (16, 24, 20, 22)),
                                   (slice(42, 48), (40, 48, 20, 22)),
                                   (slice(48, 68), (24, 40, 44, 50))):
        n = part.stop - part.start
        points[0, part, 0] = torch.linspace(x0, x1, n)
        points[0, part, 1] = torch.tensor([y0, y1]).repeat(n)[:n].float()
    return points


def test_face_parts_mask_is_the_grown_boxes_of_the_eyes_and_the_mouth():
    mask = face_parts_mask(face_points(), 64, margin=2 / 64)[0, 0]  # boxes grown by 2 px
    for x0, x1, y0, y1 in ((14, 26, 18, 24), (38, 50, 18, 24), (22, 42, 42, 52)):
        assert mask[y0:y1, x0:x1].eq(1).all()  # pixel centres within the grown box
    assert mask.sum() == 12 * 6 * 2 + 20 * 10  # nothing else: not even the corner's points
    assert mask[0, 0] == 0 and mask[32, 32] == 0


def test_face_parts_l1_is_the_mean_error_inside_the_parts_only():
    real = torch.zeros(1, 3, 64, 64)
    points, loss = face_points(), FacePartsL1Loss(margin=2 / 64)
    outside = real.clone()
    outside[..., 30:40, 50:60] = 1.0  # the cheek: no part there
    assert loss(outside, real, points) == 0
    inside = real.clone()
    inside[..., 42:52, 22:42] = 0.5  # the whole mouth box, off by 0.5
    mouth_share = 200 / (12 * 6 * 2 + 20 * 10)
    assert loss(inside, real, points) == pytest.approx(0.5 * mouth_share)
    assert F.l1_loss(inside, real) == pytest.approx(0.5 * 200 / 64**2)  # 12x smaller


def test_reconstruction_lpips_offline(tmp_path, any_torchvision_weights):
    torch.manual_seed(0)
    alexnet = tmp_path / "alexnet-random.pth"
    features = torchvision.models.alexnet(weights=None).features.state_dict()
    torch.save({f"features.{k}": v for k, v in features.items()}, alexnet)
    rec = ReconstructionLoss(lpips_weight=2.0, lpips_net=str(alexnet))
    trunk = rec.lpips.net.state_dict()
    assert torch.equal(trunk["slice1.0.weight"], features["0.weight"])
    assert torch.equal(trunk["slice5.10.bias"], features["10.bias"])
    real = torch.rand(2, 3, 64, 64) * 2 - 1
    same, logs = rec(real, real.clone())
    assert same.item() == 0.0 and logs["lpips"].item() == 0.0
    loss, logs = rec(real.flip(-1), real)
    assert logs["lpips"].item() > 0
    assert loss.item() == pytest.approx(logs["l1"].item() + 2 * logs["lpips"].item(), rel=1e-5)
    assert ReconstructionLoss(lpips_weight=1.0, lpips_net="random").state_dict() == {}
    with pytest.raises(PdfgcError, match="alexnet-owt-7be5be79.pth not found.*=random"):
        ReconstructionLoss(lpips_weight=1.0, lpips_net=str(tmp_path / "missing.pth"))
