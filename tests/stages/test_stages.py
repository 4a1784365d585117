"""Training (``train.py`` and the stages): every stage on tiny synthetic data, the motion ->
heads -> expression hand-off, frozen weights, resume, atomic checkpoints, DDP on CPU, sweeps
and the experiment files.

The configs are the real ones (``conf/train.yaml``), composed with tiny budgets; the data is
the real ``data=synthetic`` DataModule on a very small generated dataset.
"""

from __future__ import annotations

import csv
import json
import math
import operator
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pdfgc.errors import PdfgcError
from pdfgc.inference.model import TalkingHeadModel
from pdfgc.io import read_state_dict
from pdfgc.networks import build_networks
from pdfgc.networks.checkpoints import load_networks, save_released
from pdfgc.networks.layers import EqualLinear
from pdfgc.stages.base import frozen_modules
from pdfgc.stages.callbacks import AtomicCheckpointIO
from pdfgc.stages.expression import fit_code_map, map_code_columns
from pdfgc.train import build_logger, build_module, train, wandb_offline

from conftest import ROOT, model_config

CHAIN = ("motion", "heads", "expression")
DEMO_CHAIN = ("trunk", *CHAIN)  # experiment=demo starts stage 1 from the trunk stage
CHAINS = {"demo": DEMO_CHAIN}  # an experiment's stages, in order (default: CHAIN)
# the FAN trunk's layers (hourglass and heatmaps); bn5, conv6 and fc squeeze them into f_mot
TRUNK = ("conv1", "bn1", "conv2", "conv3", "conv4", "m0", "top_m_0", "conv_last0", "bn_end0",
         "l0")
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
STAGES = sorted(p.stem for p in (ROOT / "conf" / "stage").glob("*.yaml")  # not _base_
                if not p.stem.startswith("_"))
DATA = [  # 4 identities (2 train) x 1 clip of 1 s; 8 training samples an epoch
    "data=synthetic", "data.generate.num_identities=4", "data.generate.clips_per_identity=1",
    "data.generate.val_identities=1", "data.generate.test_identities=1",
    "data.generate.seconds=1.0", "data.generate.workers=1", "data.batch_size=4",
    "data.samples_per_epoch.train=8", "data.samples_per_epoch.val=4",
]
FAST = [  # two steps, validation and a checkpoint at every step, images at step 1 and 2
    "model=tiny", "trainer=cpu", "trainer.max_steps=2", "trainer.val_check_interval=2",
    "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1", "callbacks.model_checkpoint.every_n_train_steps=1",
    "callbacks.image_logger.every_n_steps=2", "callbacks.image_logger.max_images=2",
    "~callbacks.progress_bar", "logger=csv",
]


def compose_train(root: Path, data_dir: Path, *overrides: str):
    """conf/train.yaml as Hydra composes it, writing under ``root``, with tiny budgets."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose("train", overrides=[
            *DATA, *FAST, f"paths.root_dir={root}", f"paths.data_dir={data_dir}",
            "paths.output_dir=${group_dir}/${stage.name}", "+trainer.enable_progress_bar=false",
            *overrides])


def cli_command(root: Path, data_dir: Path, *overrides: str, multirun: bool = False
                ) -> dict:
    """Arguments of a ``python train.py [-m]`` subprocess with the tiny settings."""
    command = [sys.executable, str(ROOT / "train.py"), *(["-m"] if multirun else []),
               *DATA, *FAST, f"paths.root_dir={root}", f"paths.data_dir={data_dir}",
               *overrides]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return {"args": command, "cwd": root, "env": env, "text": True}


def cli(root: Path, data_dir: Path, *overrides: str, multirun: bool = False
        ) -> subprocess.CompletedProcess:
    """Run ``python train.py [-m]`` with the tiny settings; its output is captured."""
    return subprocess.run(**cli_command(root, data_dir, *overrides, multirun=multirun),
                          capture_output=True, timeout=300)


def checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def metrics(run: Path, version: int = 0) -> list[dict[str, str]]:
    with open(run / "csv" / f"version_{version}" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def logged_steps(rows: list[dict[str, str]], key: str) -> list[int]:
    return [int(r["step"]) for r in rows if r.get(key)]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """The tiny synthetic dataset, generated once through the DataModule."""
    data_dir = tmp_path_factory.mktemp("data")
    instantiate(compose_train(data_dir, data_dir).data).prepare_data()
    return data_dir


@pytest.fixture(scope="module")
def chain(tmp_path_factory, data_dir) -> tuple[Path, dict[str, float | None]]:
    """motion -> heads -> expression in one run group, two steps each."""
    root = tmp_path_factory.mktemp("chain")
    results = {stage: train(compose_train(root, data_dir, f"stage={stage}", "run_group=chain"))
               for stage in CHAIN}
    return root / "outputs" / "train" / "chain", results


# --- the chain ---------------------------------------------------------------------------

def test_every_stage_of_the_chain_writes_checkpoints_images_logs_and_config(chain):
    group, results = chain
    for stage in CHAIN:
        run = group / stage
        names = {p.name for p in (run / "checkpoints").glob("*.ckpt")}
        assert names == {f"{stage}-1.ckpt", f"{stage}-2.ckpt", "last.ckpt"}
        # one iteration is one global step, though D and G both step in motion / expression
        assert checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 2
        config = OmegaConf.load(run / "config.yaml")
        assert config.stage.name == stage and "${" not in (run / "config.yaml").read_text()
        rows = metrics(run)
        assert logged_steps(rows, "train/loss/total") == [0, 1]
        val = [float(r["val/loss/total"]) for r in rows if r.get("val/loss/total")]
        assert len(val) == 1 and results[stage] == pytest.approx(val[0])
        lrs = [float(r["train/lr/motion"]) for r in rows if r.get("train/lr/motion")]
        assert lrs == pytest.approx([1e-4, 1e-4])
    rows = metrics(group / "motion")
    for key in ("train/loss/gan_d", "train/loss/gan", "train/loss/feature_matching",
                "train/loss/motion", "train/lr/discriminator", "train/lr/generator0",
                "train/grad_norm/generator0", "train/grad_norm/discriminator",
                "train/motion/cos", "val/loss/motion"):
        assert logged_steps(rows, key), key
    assert not logged_steps(rows, "train/loss/vgg")  # weight 5 but no VGG19 file: off
    rows = metrics(group / "heads")
    for key in ("train/loss/lip", "train/lip/acc", "train/loss/eye", "train/loss/blink",
                "train/loss/gaze", "train/loss/pose", "train/lr/audio"):
        assert logged_steps(rows, key), key
    rows = metrics(group / "expression")
    assert logged_steps(rows, "train/loss/decorrelation")
    assert logged_steps(rows, "train/loss/lip") and logged_steps(rows, "train/loss/gan_d")
    images = {p.name for p in (group / "expression" / "images").glob("*.png")}
    assert {f"{n}-{s:07d}.png" for n in ("reconstruction", "swap_mouth", "swap_emotion",
                                          "swap_eye", "swap_pose") for s in (1, 2)} == images
    assert {p.name for p in (group / "motion" / "images").glob("*-0000002.png")} == {
        "reconstruction-0000002.png", "swap_motion-0000002.png"}


def test_init_from_loads_the_earlier_stage_by_name_and_reports_the_rest(chain, data_dir,
                                                                       caplog):
    group, _ = chain
    cfg = compose_train(group.parents[2], data_dir, "stage=heads", "run_group=chain")
    with caplog.at_level("INFO", logger="pdfgc.stages.base"):
        module = build_module(cfg)
    report = module.init_report
    assert report["missing"] and all(k.startswith("audio.") for k in report["missing"])
    assert {k.split(".")[0] for k in report["unexpected"]} == {"discriminator"}
    assert report["mismatched"] == [] and report["partial"] == []
    motion = read_state_dict(group / "motion" / "checkpoints" / "last.ckpt")["state_dict"]
    for key, value in module.nets.motion.state_dict().items():
        assert torch.equal(value, motion[f"nets.motion.{key}"])
    message = next(r.getMessage() for r in caplog.records if "init_from" in r.getMessage())
    assert "complete: appearance, generator0, motion" in message
    assert "missing (new): audio" in message


def test_init_map_starts_g_from_g0_with_its_appearance_columns(chain, data_dir):
    group, _ = chain
    overrides = ["stage=expression", "run_group=chain", "stage.init_map={generator0: generator}"]
    cfg = compose_train(group.parents[2], data_dir, *overrides,
                        "stage.init_from=${group_dir}/motion/checkpoints/last.ckpt")
    torch.manual_seed(0)
    module = build_module(cfg)
    torch.manual_seed(0)  # the same networks, initialised alike, not loaded
    fresh = build_module(compose_train(group.parents[2], data_dir, *overrides,
                                       "stage.init_from=null")).nets.generator.state_dict()
    g0 = {k[len("nets.generator0."):]: v for k, v in read_state_dict(
        group / "motion" / "checkpoints" / "last.ckpt")["state_dict"].items()
        if k.startswith("nets.generator0.")}
    g = module.nets.generator.state_dict()
    appearance = cfg.model.codes.appearance
    partial = {k.split(".", 1)[1] for k in module.init_report["partial"]}
    assert partial and all(k.endswith("modulation.weight") for k in partial)
    for key, value in g.items():
        if key in partial:  # style [appearance | f_mot] -> [appearance | mouth, ...]
            assert value.shape[1] != g0[key].shape[1]
            # rescaled for the equalised learning rate's run-time 1 / sqrt(inputs)
            rescale = math.sqrt(value.shape[1] / g0[key].shape[1])
            torch.testing.assert_close(value[:, :appearance], g0[key][:, :appearance] * rescale)
            # the mouth, emotion, eye and pose columns keep G's own initialisation
            assert torch.equal(value[:, appearance:], fresh[key][:, appearance:])
        else:
            assert torch.equal(value, g0[key]), key
    assert not any(k.startswith("generator.") for k in module.init_report["missing"])


def test_code_columns_make_g_render_codes_as_g0_renders_their_f_mot():
    """A style projection of G built by ``map_code_columns`` from G0's gives, for [appearance
    | codes], exactly G0's output for [appearance | codes @ m + b]; ``fit_code_map`` recovers
    an affine map and says how much of the features it explains."""
    torch.manual_seed(0)
    appearance, features, codes = 16, 24, 6
    g0 = EqualLinear(appearance + features, 10, bias_init=1.0)
    g = EqualLinear(appearance + codes, 10, bias_init=1.0)
    c = torch.randn(200, codes)
    m_true, b_true = torch.randn(codes, features), torch.randn(features)
    m, b, explained = fit_code_map(c, c @ m_true + b_true)
    torch.testing.assert_close(m.float(), m_true, atol=2e-2, rtol=2e-2)
    assert explained > 0.999
    assert fit_code_map(c, torch.randn(200, features))[2] < 0.2  # unrelated features
    columns, bias = map_code_columns(g0.weight.data[:, appearance:], appearance + features,
                                     appearance + codes, m_true.double(), b_true.double())
    with torch.no_grad():
        rescale = math.sqrt((appearance + codes) / (appearance + features))
        g.weight[:, :appearance] = g0.weight[:, :appearance] * rescale
        g.weight[:, appearance:] = columns.float()
        g.bias.copy_(g0.bias + bias.float())
        a = torch.randn(5, appearance)
        torch.testing.assert_close(g(torch.cat([a, c[:5]], 1)),
                                   g0(torch.cat([a, c[:5] @ m_true + b_true], 1)),
                                   atol=1e-4, rtol=1e-4)


def _frozen_keys(state: dict, prefixes: tuple[str, ...]) -> list[str]:
    return [k for k in state if k.startswith(prefixes)]


def test_frozen_weights_and_batchnorm_statistics_stay_bit_identical(chain):
    group, _ = chain
    states = {s: read_state_dict(group / s / "checkpoints" / "last.ckpt")["state_dict"]
              for s in CHAIN}
    # heads froze appearance, the FAN trunk and the emotion head
    frozen = _frozen_keys(states["heads"], ("nets.appearance.", "nets.motion.model.",
                                            "nets.motion.to_emo.", "nets.motion.emo_embed."))
    assert any("running_mean" in k for k in frozen)
    for key in frozen:
        assert torch.equal(states["heads"][key], states["motion"][key]), key
    trained = ("nets.motion.to_mouth.", "nets.motion.to_eye.", "nets.motion.headpose_embed.")
    for prefix in trained:
        assert any(not torch.equal(states["heads"][k], states["motion"][k])
                   for k in _frozen_keys(states["heads"], (prefix,))), prefix
    # expression froze everything of E_mot but the emotion head, and E_app's backbone
    frozen = _frozen_keys(states["expression"], (
        "nets.appearance.model.", "nets.motion.model.", "nets.motion.to_mouth.",
        "nets.motion.to_eye.", "nets.motion.headpose_embed."))
    for key in frozen:
        assert torch.equal(states["expression"][key], states["heads"][key]), key
    for prefix in ("nets.motion.to_emo.", "nets.appearance.conv1x1."):
        assert any(not torch.equal(states["expression"][k], states["heads"][k])
                   for k in _frozen_keys(states["expression"], (prefix,))), prefix


def test_expression_checkpoint_loads_into_the_inference_model(chain, data_dir):
    group, _ = chain
    path = group / "expression" / "checkpoints" / "last.ckpt"
    nets = build_networks(model_config("tiny"))
    load_networks(path, nets)  # strict: every inference network, by name
    state = read_state_dict(path)
    assert torch.equal(nets.generator.conv1.conv.weight,
                       state["state_dict"]["nets.generator.conv1.conv.weight"])
    settings = state["hyper_parameters"]  # the run's resolved config, plain containers
    assert settings["model"]["name"] == "tiny" and settings["stage"]["name"] == "expression"
    assert settings["data"]["root"] == str(data_dir / "synthetic")
    model = TalkingHeadModel.from_config(model_config("tiny"), str(path))
    face = torch.zeros(1, 3, 64, 64)
    codes = torch.cat(list(model.encode_motion(face).values()), dim=1)  # pose | eye | emotion
    motion = torch.cat([model.encode_audio(torch.zeros(1, 1, 80, 20)), codes[:, 12:],
                        codes[:, 6:12], codes[:, :6]], dim=1)  # mouth | emotion | eye | pose
    frame = model.render(model.encode_appearance(face), motion)
    assert frame.shape == (1, 3, 64, 64) and torch.isfinite(frame).all()


# --- the demo's chain: trunk, stage 1 on the frozen trunk, the [ours] terms --------------------

def random_batch(size: int = 4, image: int = 64) -> dict[str, torch.Tensor]:
    """The images stage 1 renders from, random."""
    torch.manual_seed(0)
    return {k: torch.rand(size, 3, image, image) * 2 - 1
            for k in ("source", "target", "target_motion", "target_motion2")}


def demo_config(root: Path, data_dir: Path, stage: str, *overrides: str):
    return compose_train(root, data_dir, "experiment=demo", f"stage={stage}", "run_group=demo",
                         "torch_threads=null", *overrides)


@pytest.fixture(scope="module")
def demo_chain(tmp_path_factory, data_dir) -> Path:
    """experiment=demo's trunk -> motion -> heads -> expression, two steps each."""
    root = tmp_path_factory.mktemp("demo")
    for stage in DEMO_CHAIN:
        train(demo_config(root, data_dir, stage))
    return root


def trainable(module) -> set[str]:
    return {n for n, p in module.nets.named_parameters() if p.requires_grad}


def test_trunk_stage_trains_only_the_trunk_on_the_landmarks(demo_chain, data_dir):
    run = demo_chain / "outputs" / "train" / "demo" / "trunk"
    rows = metrics(run)
    assert logged_steps(rows, "train/loss/landmarks") == [0, 1]
    assert [r["val/landmarks/distance"] for r in rows if r.get("val/landmarks/distance")]
    module = build_module(demo_config(demo_chain, data_dir, "trunk"))
    assert set(module.nets) == {"motion"} and set(module.terms) == {"landmarks"}
    assert module.terms["landmarks"].extra_weight == 10.0  # the pupils weigh more
    assert {n.split(".")[2] for n in trainable(module)} == set(TRUNK)
    assert all(n.startswith("motion.model.") for n in trainable(module))


def test_demo_learning_rate_falls_at_each_quarter_of_the_budget(tmp_path, data_dir):
    cfg = demo_config(tmp_path, data_dir, "trunk", "trainer.max_steps=4000")
    assert cfg.stage.scheduler.step_size == 1000  # ${pdfgc.share:${trainer.max_steps},0.25}
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = instantiate(cfg.stage.optimizer)([parameter])
    scheduler = instantiate(cfg.stage.scheduler)(optimizer)
    rates = []
    for _ in range(4000):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == rates[999] == pytest.approx(2e-3)
    assert rates[1000] == pytest.approx(6e-4) and rates[3999] == pytest.approx(2e-3 * 0.3**3)
    tiny = demo_config(tmp_path, data_dir, "trunk", "trainer.max_steps=2")
    assert tiny.stage.scheduler.step_size == 1  # never 0, which StepLR refuses


def test_stage_one_starts_from_the_trunk_frozen_and_runs_it_without_gradients(demo_chain,
                                                                            data_dir):
    group = demo_chain / "outputs" / "train" / "demo"
    module = build_module(demo_config(demo_chain, data_dir, "motion"))
    motion = {n for n in trainable(module) if n.startswith("motion.")}
    assert {n.split(".")[2] for n in motion} == {"bn5", "conv6", "fc"}  # the squeeze only
    assert "landmarks" not in module.terms and "trunk_perceptual" in module.terms
    trunk = read_state_dict(group / "trunk" / "checkpoints" / "last.ckpt")["state_dict"]
    after = read_state_dict(group / "motion" / "checkpoints" / "last.ckpt")["state_dict"]
    trunk_keys = [k for k in trunk if k.split(".")[3:4] and k.split(".")[3] in TRUNK]
    assert any("running_mean" in k for k in trunk_keys)
    for key in trunk_keys:  # weights and batch-norm statistics: bit-identical
        assert torch.equal(after[key], trunk[key]), key
    assert any(not torch.equal(after[k], trunk[k]) for k in after
               if k.startswith("nets.motion.model.fc."))
    module.train()
    out = module.render(random_batch())
    assert not out["heatmaps"].requires_grad  # the frozen trunk recorded no graph
    assert out["codes"]["motion"].requires_grad
    rows = metrics(group / "motion")
    assert logged_steps(rows, "train/loss/trunk_perceptual") == [0, 1]
    assert not logged_steps(rows, "train/loss/landmarks")


def test_demo_heads_and_expression_use_the_extensions(demo_chain, data_dir):
    group = demo_chain / "outputs" / "train" / "demo"
    for stage, pairs in (("heads", ("mouth_pose", "eye_pose")),
                         ("expression", ("emotion_pose", "emotion_eye"))):
        rows = metrics(group / stage)
        assert logged_steps(rows, "train/loss/pose_decorrelation") == [0, 1], stage
        for pair in pairs:
            assert logged_steps(rows, f"train/pose_decorrelation/{pair}"), pair
    for term in ("trunk_perceptual", "face_parts"):
        assert logged_steps(metrics(group / "expression"), f"train/loss/{term}") == [0, 1]
    heads_rates, expression_rates = ([float(r["train/lr/motion"]) for r in metrics(group / s)
                                      if r.get("train/lr/motion")]
                                     for s in ("heads", "expression"))
    assert heads_rates == [pytest.approx(r / 2) for r in expression_rates]  # half the rate
    heads = build_module(demo_config(demo_chain, data_dir, "heads"))
    limits = torch.tensor([25.0, 20.0, 15.0, 0.08, 0.05, 0.05])  # the synthetic pose's range
    assert (limits * heads.pose_scale).tolist() == pytest.approx([0.8] * 6, abs=0.01)


def test_blink_is_regressed_with_mse_and_the_released_pose_scale_stays(tmp_path, data_dir):
    module = build_module(compose_train(tmp_path, data_dir, "stage=heads",
                                        "stage.init_from=null"))
    assert module.terms["blink"].kind == "mse"  # L1's optimum would be "always open"
    assert module.terms["pose"].kind == module.terms["gaze"].kind == "l1"
    assert module.pose_scale.tolist() == pytest.approx([1 / 30] * 3 + [1.0] * 3, rel=1e-3)
    assert "pose_decorrelation" not in module.terms  # an extension: off unless asked for


def test_every_blink_dim_regresses_the_closure(tmp_path, data_dir):
    module = build_module(compose_train(tmp_path, data_dir, "stage=heads", "stage.init_from=null",
                                        *(f"loss.{t}=0" for t in ("lip", "eye", "gaze", "pose"))))
    closure = torch.tensor([0.0, 1.0])
    eye = torch.zeros(2, 6)
    eye[:, module.blink_dims] = closure[:, None]
    assert module.losses({"blink": closure}, {"motion": {"eye": eye}}) == {"blink": 0.0}
    eye[:, module.blink_dims] += torch.tensor([0.5, -0.5, 0.5, -0.5])  # the same mean
    assert module.losses({"blink": closure}, {"motion": {"eye": eye}})["blink"] == 0.25


@pytest.mark.parametrize("motion_input", ["augmented", "target"])
def test_motion_input_chooses_the_image_f_mot_is_built_from(tmp_path, data_dir, motion_input):
    module = build_module(compose_train(tmp_path, data_dir, "stage=motion",
                                        f"stage.motion_input={motion_input}"))
    batch = random_batch()
    with module.evaluating(), torch.no_grad():
        out = module.render(batch)
        image = {"augmented": "target_motion", "target": "target"}[motion_input]
        assert torch.equal(out["codes"]["motion"], module.nets.motion.model(batch[image]))
    with pytest.raises(PdfgcError, match="stage.motion_input='warped': expected one of "
                                         "augmented, target"):
        build_module(compose_train(tmp_path, data_dir, "stage=motion",
                                   "stage.motion_input=warped"))


# --- single stages, configuration ------------------------------------------------------------

def test_identity_stage_trains_the_classifier(tmp_path, data_dir):
    result = train(compose_train(tmp_path, data_dir, "stage=identity", "run_group=id",
                                 "trainer.limit_val_batches=0"))
    assert isinstance(result, float) and math.isfinite(result)  # train/loss/identity
    run = tmp_path / "outputs" / "train" / "id" / "identity"
    state = read_state_dict(run / "checkpoints" / "last.ckpt")["state_dict"]
    assert set(k.split(".")[1] for k in state) == {"appearance"}
    assert logged_steps(metrics(run), "train/identity/acc") == [0, 1]


def test_stage_config_sets_terms_freezing_optimisers_and_eval_mode(tmp_path, data_dir):
    cfg = compose_train(tmp_path, data_dir, "stage=expression", "stage.init_from=null",
                        "loss.feature_matching=0")
    module = build_module(cfg)
    # weight 0 is not built; VGG (weight 5) is off without a weights file
    assert set(module.terms) == {"gan", "lip", "decorrelation"}
    module.train()
    assert module.frozen == ["appearance.model", "appearance.fc", "motion.model", "motion.to_mouth",
                             "motion.mouth_embed", "motion.to_headpose",
                             "motion.headpose_embed", "motion.to_eye", "motion.eye_embed"]
    assert not module.nets.motion.model.training and not module.nets.appearance.model.training
    assert module.nets.motion.to_emo.training and module.nets.generator.training
    assert not module.nets.appearance.model.conv1.weight.requires_grad
    assert module.nets.appearance.conv1x1.weight.requires_grad
    (opt_g, opt_d), (sched_g, _) = module.configure_optimizers()
    assert [(g["name"], g["max_grad_norm"]) for g in opt_g.param_groups] == [
        ("appearance", None), ("motion", None), ("audio", None), ("generator", 5.0)]
    assert [(g["name"], g["max_grad_norm"]) for g in opt_d.param_groups] == [
        ("discriminator", 5.0)]
    assert isinstance(opt_g, torch.optim.Adam) and opt_g.defaults["betas"] == (0.0, 0.99)
    assert opt_g.defaults["lr"] == 1e-4 and opt_g.defaults["weight_decay"] == 1e-3
    assert (sched_g.step_size, sched_g.gamma) == (80000, 0.93)
    trainable = {p for g in opt_g.param_groups + opt_d.param_groups for p in g["params"]}
    assert all(p.requires_grad for p in trainable)
    assert trainable == {p for p in module.parameters() if p.requires_grad}


def test_frozen_modules_are_the_outermost_fully_frozen_ones():
    net = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()),
                              torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    net[0].requires_grad_(False)
    net[2].weight.requires_grad_(False)
    assert frozen_modules(net) == ["0"]  # not "0.0"; the BN has a trainable bias
    net[2].bias.requires_grad_(False)
    assert frozen_modules(net) == ["0", "2"]


def test_init_from_a_released_weights_folder_reports_shape_mismatches(tmp_path, data_dir):
    other = model_config("tiny")
    other.codes.mouth, other.generator.style_dim = 16, 292  # a 16-d mouth code, not 32
    save_released(tmp_path, build_networks(other))
    cfg = compose_train(tmp_path, data_dir, "stage=expression", f"stage.init_from={tmp_path}")
    module = build_module(cfg)
    report = module.init_report
    assert {k.split(".")[0] for k in report["missing"]} == {"discriminator"}
    assert report["unexpected"] == []
    assert {"audio.mouth_embed.1.weight", "motion.mouth_embed.1.weight",
            "generator.conv1.conv.modulation.weight"} <= set(report["mismatched"])
    released = read_state_dict(tmp_path / "motion_model.pth")
    assert torch.equal(module.nets.motion.model.conv1.weight, released["model.conv1.weight"])
    assert not torch.equal(module.nets.motion.mouth_embed[1].bias[:16],
                           released["mouth_embed.1.bias"])  # kept its own initialisation


@pytest.mark.parametrize(("overrides", "message"), [
    (["stage=heads", "run_group=none"], "stage.init_from: .*none/motion/checkpoints/last.ckpt "
                                        "not found"),
    (["stage.freeze=[motion.nope.*]"], "stage.freeze: 'motion.nope.\\*' matches no parameter"),
    (["loss.vgg_weights=/missing/vgg19.pth"], "loss.vgg_weights: vgg19-dcbb9e9d.pth not found"),
    (["stage.networks=[appearance,motoin]"], "unknown network 'motoin'"),
    (["stage.networks=[appearance,motion,generator0]", "stage.clip={}"],
     "loss.gan needs discriminator in stage.networks"),
    (["loss.gan=0", "loss.feature_matching=0", "loss.motion=0"],
     "stage motion: no loss term has a positive weight"),
    (["loss.landmarks=1", "loss.landmark_extra_weight=0"],
     "loss.landmark_extra_weight must be positive, got 0"),
    (["loss.face_parts=1", "loss.face_parts_margin=-0.1"],
     "loss.face_parts_margin must be 0 or more, got -0.1"),
])
def test_bad_stage_settings_are_one_line_errors(tmp_path, data_dir, overrides, message):
    with pytest.raises(PdfgcError, match=message):
        build_module(compose_train(tmp_path, data_dir, *overrides))


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.batch_size=0"], "data.batch_size must be at least 1, got 0"),
    (["stage.optimizer.lr=-1"], "stage.optimizer: Invalid learning rate: -1"),
    (["trainer.max_steps=${steps.trunk}"],  # as experiment=voxceleb2 stage=trunk ends up:
     "config trainer.max_steps: Interpolation key 'steps.trunk' not found"),  # no trunk budget
    pytest.param(["trainer=gpu"], "pytorch_lightning.Trainer: No supported gpu backend found!",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")),
])
def test_bad_training_values_are_one_line_exit_2(tmp_path, data_dir, overrides, message):
    result = cli(tmp_path, data_dir, "stage=motion", *overrides)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {message}"
    assert "Traceback" not in result.stderr + result.stdout


def test_an_image_size_the_model_does_not_take_is_one_line_before_any_data(tmp_path):
    result = cli(tmp_path, tmp_path, "stage=motion", "data.image_size=48")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: data.image_size=48 does not match model=tiny (64 px); set data.image_size=64")
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "synthetic").exists()  # nothing generated


def test_configs_for_scale_logging_and_clusters(tmp_path, data_dir, monkeypatch):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("train", overrides=["experiment=voxceleb2", "stage=heads",
                                          "logger=wandb"])
    assert cfg.trainer.max_steps == 150000 and cfg.model.name == "official"
    assert cfg.trainer.strategy.find_unused_parameters and cfg.stage.sync_batchnorm
    assert cfg.loss.vgg_weights.endswith("weights/vgg19-dcbb9e9d.pth")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # not this machine's login
    assert cfg.logger.wandb.offline is True
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert cfg.logger.wandb.offline is False
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("train", overrides=["experiment=voxceleb2", "hydra/launcher=slurm"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 1)


def test_every_stage_takes_its_optimiser_from_the_base_and_its_loss_from_the_loss_group():
    conf = ROOT / "conf"
    base = OmegaConf.load(conf / "stage" / "_base_.yaml").stage
    assert not (conf / "experiment_stage").exists()
    for stage in STAGES:  # each stage file: the base, its loss, then only what differs
        own = OmegaConf.load(conf / "stage" / f"{stage}.yaml")
        assert list(own.defaults) == ["_base_", {"/loss": stage}, "_self_"]
        assert not {"optimizer", "scheduler"} & set(own.stage) and "loss" not in own
        assert (conf / "loss" / f"{stage}.yaml").is_file()
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        for stage in STAGES:
            for experiment in [None, *EXPERIMENTS]:
                chosen = [f"stage={stage}"] + ([f"experiment={experiment}"] if experiment else [])
                cfg = compose("train", overrides=chosen, return_hydra_config=True)
                files = [conf / "experiment" / f"{experiment}.yaml",
                         conf / "experiment" / f"{experiment}" / f"{stage}.yaml"]
                changes = [OmegaConf.load(f).get("stage", {})
                           for f in files if experiment and f.is_file()]
                for key in ("optimizer", "scheduler"):  # the base's, as an experiment changes it
                    expected = OmegaConf.merge(base[key], *(c.get(key, {}) for c in changes))
                    assert OmegaConf.to_container(cfg.stage[key]) == OmegaConf.to_container(
                        expected), (stage, experiment, key)
                assert cfg.hydra.runtime.choices.loss == stage
                assert cfg.hydra.runtime.choices["experiment@_global_"] == f"{experiment}/{stage}"
                assert compose("train", overrides=[*chosen, "stage.optimizer.lr=0.5"]
                               ).stage.optimizer.lr == 0.5
        # loss is a group: a value changes one term, a choice replaces the stage's loss
        assert compose("train", overrides=["stage=motion", "loss.l1=2"]).loss.l1 == 2
        swapped = compose("train", overrides=["stage=motion", "loss=identity"])
        assert OmegaConf.to_container(swapped.loss) == {"identity": 1.0}
        assert swapped.stage.name == "motion"


def test_tensorboard_and_offline_wandb_get_scalars_and_images(tmp_path, data_dir,
                                                             monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # whatever this machine's login
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(compose_train(tmp_path, data_dir, "stage=motion", "run_group=loggers",
                        "logger=[tensorboard,wandb]", "trainer.max_steps=1",
                        "trainer.val_check_interval=1", "callbacks.image_logger.every_n_steps=1"))
    run = tmp_path / "outputs" / "train" / "loggers" / "motion"
    events = EventAccumulator(str(next((run / "tensorboard").rglob("events.out.*")))).Reload()
    assert "train/image/reconstruction" in events.Tags()["images"]
    assert {"train/loss/total", "val/loss/total", "train/lr/generator0"} <= set(
        events.Tags()["scalars"])
    offline = next((run / "wandb").glob("offline-run-*"))
    assert list((offline / "files" / "media" / "images" / "train" / "image").glob("*.png"))


KEY = "k" * 40  # the format of a W&B API key


@pytest.mark.parametrize(("env", "netrc", "offline"), [
    ({}, None, True),  # not logged in
    ({"WANDB_API_KEY": KEY}, None, False),
    ({}, f"machine api.wandb.ai login user password {KEY}", False),  # `wandb login`
    ({}, "machine api.wandb.ai login user password bad", False),  # wandb.init says why
    ({}, f"machine example.com login user password {KEY}", True),  # not W&B's host
    ({"WANDB_BASE_URL": "https://wandb.example.com"},
     f"machine wandb.example.com login user password {KEY}", False),  # own server
    ({"WANDB_MODE": "online"}, None, False),
    ({"WANDB_MODE": "offline", "WANDB_API_KEY": KEY}, None, True),
    ({"WANDB_MODE": "dryrun"}, f"machine api.wandb.ai login user password {KEY}", True),
    ({"WANDB_MODE": "disabled"}, None, False),  # left to wandb, not turned into dryrun
])
def test_wandb_is_online_when_logged_in_or_asked_to(tmp_path, monkeypatch, env, netrc,
                                                    offline):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # where `wandb login` keeps the key: ~/.netrc
    if netrc is not None:
        (tmp_path / ".netrc").write_text(netrc + "\n")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert wandb_offline() is offline


def test_a_resumed_run_continues_its_wandb_run(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    overrides = ["stage=motion", "run_group=wandb", "logger=wandb",
                 "callbacks.image_logger.every_n_steps=0"]
    run = tmp_path / "outputs" / "train" / "wandb" / "motion"
    train(compose_train(tmp_path, data_dir, *overrides, "trainer.max_steps=1"))
    run_id = (run / "wandb" / "run_id").read_text()
    train(compose_train(tmp_path, data_dir, *overrides, "trainer.max_steps=2"))  # resumes
    assert checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 2
    assert (run / "wandb" / "run_id").read_text() == run_id
    runs = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # wandb adds "-1" to a folder name taken within the same second
    assert all(re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{run_id}(-\d+)?", name) for name in runs)
    # a run that starts over gets a new W&B run
    cfg = compose_train(tmp_path, data_dir, *overrides, "resume=false")
    fresh = build_logger(cfg.logger.wandb, run, resuming=False)
    assert fresh.version == (run / "wandb" / "run_id").read_text() != run_id


def test_a_run_draws_its_loss_curves_and_a_resumed_run_keeps_the_earlier_steps(tmp_path,
                                                                              data_dir):
    overrides = ["stage=motion", "run_group=curves", "trainer.val_check_interval=1",
                 "callbacks.image_logger.every_n_steps=0"]
    run = tmp_path / "outputs" / "train" / "curves" / "motion"
    train(compose_train(tmp_path, data_dir, *overrides, "trainer.max_steps=1"))
    image = cv2.imread(str(run / "loss_curves.png"))
    assert image is not None and image.shape[0] > 100 and image.std() > 0
    curves = json.loads((run / "loss_curves.json").read_text())
    assert {"train/loss/total", "train/loss/motion", "val/loss/total",
            "val/loss/motion"} <= set(curves)
    assert all(key.split("/")[:2] in (["train", "loss"], ["val", "loss"]) for key in curves)
    train(compose_train(tmp_path, data_dir, *overrides, "trainer.max_steps=2"))  # resumes
    assert logged_steps(metrics(run, 1), "train/loss/total") == [1]  # this run's only step
    curves = json.loads((run / "loss_curves.json").read_text())
    rows = metrics(run, 0) + metrics(run, 1)
    for key in ("train/loss/total", "val/loss/total", "train/loss/motion"):
        logged = {int(r["step"]): float(r[key]) for r in rows if r.get(key)}
        assert list(logged) == [0, 1]
        assert dict(curves[key]) == pytest.approx(logged), key  # the values the loggers got
    states = checkpoint(run / "checkpoints" / "last.ckpt")["callbacks"]
    history = next(v["history"] for k, v in states.items() if k.startswith("LossCurves"))
    assert sorted(history["train/loss/total"]) == [0, 1]  # kept in checkpoints: even kill -9


def test_mixed_precision_training_step(tmp_path, data_dir):
    result = train(compose_train(tmp_path, data_dir, "stage=expression", "stage.init_from=null",
                                 "trainer.precision=bf16-mixed", "trainer.max_steps=1",
                                 "trainer.val_check_interval=1"))
    assert math.isfinite(result)


# --- resume, atomic checkpoints ----------------------------------------------------------------

def test_resume_continues_at_the_same_global_step(tmp_path, data_dir):
    base = ["stage=motion", "run_group=resume", "stage.gan_start=3"]
    run = tmp_path / "outputs" / "train" / "resume" / "motion"
    train(compose_train(tmp_path, data_dir, *base))
    second = run / "checkpoints" / "motion-2.ckpt"
    before = second.read_bytes()
    train(compose_train(tmp_path, data_dir, *base, "trainer.max_steps=4", "ckpt_path=last",
                        "trainer.val_check_interval=4"))
    assert checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert logged_steps(metrics(run, 0), "train/loss/total") == [0, 1]
    assert logged_steps(metrics(run, 1), "train/loss/total") == [2, 3]  # from step 2 on
    assert second.read_bytes() == before
    # the discriminator starts at step 3: before it, no D step and no adversarial terms
    assert not logged_steps(metrics(run, 0), "train/loss/gan_d")
    assert logged_steps(metrics(run, 1), "train/loss/gan_d") == [3]
    assert logged_steps(metrics(run, 1), "train/loss/feature_matching") == [3]
    # resume=true (default): a run folder with a last.ckpt continues without ckpt_path
    train(compose_train(tmp_path, data_dir, *base, "trainer.max_steps=5",
                        "trainer.val_check_interval=5"))
    assert checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 5
    assert logged_steps(metrics(run, 2), "train/loss/total") == [4]


EXACT = [  # 3 steps an epoch, the discriminator from step 3, deterministic, every step recorded
    "stage=motion", "stage.gan_start=3", "data.samples_per_epoch.train=12",
    "trainer.deterministic=true", "trainer.limit_val_batches=0",
    "callbacks.image_logger.every_n_steps=0",
    "callbacks.batch_record.path=${paths.output_dir}/batches.jsonl"]


def recorded_batches(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "batches.jsonl").read_text().splitlines()]


def assert_same_training(run: Path, reference: Path) -> None:
    """Every step ``run`` recorded trained on the reference's batch of that step, and both end
    with bit-equal weights and optimiser states."""
    batches = {b["step"]: b for b in recorded_batches(reference)}
    for seen in recorded_batches(run):
        assert seen == batches[seen["step"]], seen["step"]
    final, expected = (checkpoint(r / "checkpoints" / "last.ckpt") for r in (run, reference))
    assert final["global_step"] == expected["global_step"]
    for name, value in expected["state_dict"].items():  # tensors, and extra states (dicts)
        same = torch.equal if torch.is_tensor(value) else operator.eq
        assert same(final["state_dict"][name], value), name
    assert final["optimizer_states"].__repr__() == expected["optimizer_states"].__repr__()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir) -> Path:
    """Seven steps of ``EXACT`` in one go: two whole epochs and one step of the third."""
    root = tmp_path_factory.mktemp("exact")
    train(compose_train(root, data_dir, *EXACT, "run_group=whole", "trainer.max_steps=7"))
    return root / "outputs" / "train" / "whole" / "motion"


@pytest.mark.parametrize("step", [1, 3, 5])  # mid-epoch 0, the end of epoch 0, mid-epoch 1
def test_a_resumed_run_trains_on_the_batches_and_ends_with_the_weights_of_one_run(
        tmp_path, data_dir, uninterrupted, step):
    resumed = tmp_path / "outputs" / "train" / "resumed" / "motion"
    train(compose_train(tmp_path, data_dir, *EXACT, "run_group=resumed", "trainer.max_steps=7",
                        f"ckpt_path={uninterrupted / 'checkpoints' / f'motion-{step}.ckpt'}"))
    assert [b["step"] for b in recorded_batches(resumed)] == list(range(step, 7))
    assert_same_training(resumed, uninterrupted)


def test_a_resumed_heads_stage_continues_with_its_bank_of_codes(tmp_path, data_dir, demo_chain):
    """The demo's pose decorrelation correlates over the batch and a bank of recent codes: the
    bank is training state, so a heads stage resumed mid-run (after the bank has wrapped
    around) ends with the bank, weights and optimiser of one uninterrupted run."""
    motion = demo_chain / "outputs" / "train" / "demo" / "motion" / "checkpoints" / "last.ckpt"
    banked = ["experiment=demo", "stage=heads", f"stage.init_from={motion}",
              "torch_threads=null", "loss.pose_decorrelation_bank=6", "trainer.max_steps=4",
              "trainer.deterministic=true", "trainer.limit_val_batches=0",
              "callbacks.image_logger.every_n_steps=0",
              "callbacks.model_checkpoint.every_n_train_steps=1",
              "callbacks.batch_record.path=${paths.output_dir}/batches.jsonl"]
    whole, resumed = (tmp_path / "outputs" / "train" / group / "heads"
                      for group in ("whole", "resumed"))
    train(compose_train(tmp_path, data_dir, *banked, "run_group=whole"))
    train(compose_train(tmp_path, data_dir, *banked, "run_group=resumed",
                        f"ckpt_path={whole / 'checkpoints' / 'heads-2.ckpt'}"))
    state = checkpoint(resumed / "checkpoints" / "last.ckpt")["state_dict"]
    assert state["terms.pose_decorrelation._extra_state"]["filled"] == 6  # full, and wrapped
    assert state["terms.pose_decorrelation.bank_pose"].abs().sum() > 0
    assert [b["step"] for b in recorded_batches(resumed)] == [2, 3]
    assert_same_training(resumed, whole)


def test_the_final_step_is_saved_between_two_periodic_checkpoints(tmp_path, data_dir):
    run = tmp_path / "outputs" / "train" / "final" / "motion" / "checkpoints"
    train(compose_train(tmp_path, data_dir, "stage=motion", "run_group=final",
                        "trainer.max_steps=3", "trainer.val_check_interval=3",
                        "callbacks.model_checkpoint.every_n_train_steps=2"))
    assert sorted(p.name for p in run.iterdir()) == ["last.ckpt", "motion-2.ckpt",
                                                     "motion-3.ckpt"]
    assert checkpoint(run / "last.ckpt")["global_step"] == 3


def test_a_resumed_run_prints_none_of_lightnings_known_noise(tmp_path, data_dir):
    def run(*overrides: str) -> subprocess.CompletedProcess:
        command = cli_command(tmp_path, data_dir, "stage=motion", "run_group=quiet", *overrides)
        command["env"].pop("PYTHONWARNINGS")  # every warning shown, as a user sees them
        return subprocess.run(**command, capture_output=True, timeout=300)

    run("trainer.max_steps=1")
    result = run("trainer.max_steps=2")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "resuming from" in output
    for noise in ("Tip:", "litlogger", "exists and is not empty", "LeafSpec"):
        assert noise not in output, noise


KILLED_WRITE = """
import os, signal, sys, torch
from pdfgc.stages.callbacks import AtomicCheckpointIO

def half_then_kill(obj, f, *args, **kwargs):
    with open(f, "wb") as out:
        out.write(b"PK\\x03\\x04 half a checkpoint")
        out.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = half_then_kill
AtomicCheckpointIO().save_checkpoint({"global_step": 2}, sys.argv[1])
"""


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1, "state_dict": {}}, path)
    result = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(path)], timeout=120)
    assert result.returncode == -9
    assert checkpoint(path)["global_step"] == 1
    assert [p.name for p in path.parent.iterdir() if p.name != "last.ckpt"] != []  # temp


def test_a_run_killed_with_sigkill_resumes_exactly(tmp_path, data_dir, uninterrupted):
    overrides = [*EXACT, "run_group=killed"]
    run = tmp_path / "outputs" / "train" / "killed" / "motion"
    last = run / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(**cli_command(tmp_path, data_dir, *overrides,
                                             "trainer.max_steps=1000"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (last.is_file() and checkpoint(last)["global_step"] >= 2):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        process.kill()  # SIGKILL, possibly in the middle of a checkpoint write
        process.wait()
    step = checkpoint(last)["global_step"]
    assert step < 7
    result = cli(tmp_path, data_dir, *overrides, "trainer.max_steps=7")
    assert result.returncode == 0, result.stderr[-3000:]
    assert logged_steps(metrics(run, 1), "train/loss/total") == list(range(step, 7))
    assert [b["step"] for b in recorded_batches(run)][step - 7:] == list(range(step, 7))
    assert_same_training(run, uninterrupted)


# --- processes: DDP, sweeps, experiments ---------------------------------------------------

@pytest.mark.parametrize("stage", ["identity", "trunk", "motion", "heads", "expression"])
def test_two_processes_with_batch_b_train_as_one_process_with_batch_2b(tmp_path, data_dir,
                                                                     stage):
    def first_step(name: str, *overrides: str) -> dict:
        probe = tmp_path / f"{name}.pt"
        command = cli_command(
            tmp_path, data_dir, f"stage={stage}", "stage.init_from=null",
            "stage.sync_batchnorm=true", f"run_group={name}", "trainer.max_steps=1",
            "trainer.precision=64-true",  # float32 rounding, amplified by batch norm over small
            # batches, is far above 1e-5 whichever way a batch is split; float64's is not
            "trainer.limit_val_batches=0", "callbacks.image_logger.every_n_steps=0",
            "+callbacks.probe._target_=ddp_probe.FirstStepProbe", f"+callbacks.probe.path={probe}",
            *overrides)
        command["env"]["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "stages"),
                                                        os.environ.get("PYTHONPATH", "")])
        result = subprocess.run(**command, capture_output=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return torch.load(probe, weights_only=True)

    one = first_step("one", "trainer=cpu", "data.batch_size=8")
    two = first_step("two", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                     "trainer.benchmark=false", "data.batch_size=4")
    assert one["losses"].keys() == two["losses"].keys()
    for key, value in one["losses"].items():
        assert two["losses"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert one["grads"].keys() == two["grads"].keys() and one["grads"]
    for name, grad in one["grads"].items():
        error = (two["grads"][name] - grad).norm()
        assert error <= 1e-5 * grad.norm() + 1e-10, (name, float(error), float(grad.norm()))


def test_a_failing_job_does_not_end_the_sweep(tmp_path, data_dir):
    missing = tmp_path / "missing.ckpt"
    result = cli(tmp_path, data_dir, "stage=motion", "run_group=sweep",
                 f"stage.init_from={missing},null", "trainer.max_steps=1",
                 "trainer.val_check_interval=1", "callbacks.image_logger.every_n_steps=0",
                 multirun=True)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "multirun" / "train" / "sweep"
    assert "job failed" in (sweep / "0" / "train.log").read_text()
    assert str(missing) in (sweep / "0" / "train.log").read_text()
    assert checkpoint(sweep / "1" / "checkpoints" / "last.ckpt")["global_step"] == 1


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_chains_its_stages_in_a_multirun(tmp_path, data_dir, experiment):
    stages = CHAINS.get(experiment, CHAIN)
    result = cli(tmp_path, data_dir, f"experiment={experiment}", f"stage={','.join(stages)}",
                 "trainer.max_steps=1", "trainer.val_check_interval=1",
                 "callbacks.image_logger.every_n_steps=0", "data=synthetic", "model=tiny",
                 "trainer=cpu", "++loss.vgg_weights=null", "data.batch_size=4",
                 "data.num_workers=0", multirun=True)
    assert result.returncode == 0, result.stderr[-3000:]
    group = tmp_path / "outputs" / "train" / experiment
    for stage in stages:
        assert checkpoint(group / stage / "checkpoints" / "last.ckpt")["global_step"] == 1
        assert "job failed" not in (group / stage / "train.log").read_text()
