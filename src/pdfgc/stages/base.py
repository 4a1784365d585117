"""The LightningModule every training stage shares.

:class:`StageModule` owns what the stages have in common: the networks (``self.nets``, the
names of ``pdfgc.networks`` so a checkpoint loads through
:func:`pdfgc.networks.checkpoints.load_networks`), the weighted loss terms of the ``loss``
config (a term of weight 0 is not built), which parameters train (``freeze`` patterns; fully
frozen submodules stay in eval mode), the optimisers (one for the discriminator, one for
everything else, a parameter group per network) with manual optimisation alternating D then
G, logging under ``{split}/{kind}/{name}`` keys, image grids for :meth:`log_images`, and
``init_from``, the earlier stage's checkpoint loaded by name.

A stage subclass only says how a batch is rendered (:meth:`render`) and which loss terms it
adds up (:meth:`losses`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path

import pytorch_lightning as pl
import torch
import torchvision
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only
from torch import nn

from pdfgc.errors import PdfgcError
from pdfgc.losses import (
    CodeDecorrelationLoss,
    DecorrelationLoss,
    EyeTripletLoss,
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
from pdfgc.networks import build_networks
from pdfgc.networks.checkpoints import LIGHTNING_PREFIX, RELEASED_FILES, read_state_dict
from pdfgc.outside_weights import default_path
from pdfgc.stages.distributed import convert_batchnorm, gather

log = logging.getLogger(__name__)

Batch = Mapping[str, torch.Tensor]
STAGE1_GENERATOR = "generator0"  # stage 1's G0: style [appearance | f_mot]
DISCRIMINATOR = "discriminator"
SHOWN_KEYS = 3

# Each loss term: how to build it from the ``loss`` config (options) and the ``model`` config.
TERMS: dict[str, Callable[[DictConfig, DictConfig], nn.Module]] = {
    "gan": lambda loss, model: HingeGANLoss(),
    "feature_matching": lambda loss, model: FeatureMatchingLoss(loss.fm_image_weight),
    "vgg": lambda loss, model: VGGPerceptualLoss(loss.vgg_weights),
    "trunk_perceptual": lambda loss, model: TrunkPerceptualLoss(model.motion, loss.trunk_weights),
    "l1": lambda loss, model: ReconstructionLoss(loss.lpips, loss.lpips_net),
    "motion": lambda loss, model: MotionConsistencyLoss(loss.motion_kind),
    "landmarks": lambda loss, model: LandmarkHeatmapLoss(
        loss.landmark_sigma, loss.landmark_coordinates),
    "identity": lambda loss, model: nn.CrossEntropyLoss(),
    "lip": lambda loss, model: SymmetricInfoNCE(loss.temperature, loss.similarity,
                                                mse_weight=loss.lip_mse),
    "eye": lambda loss, model: EyeTripletLoss(loss.eye_margin),
    "blink": lambda loss, model: MaskedRegression(loss.blink_regression),
    "gaze": lambda loss, model: MaskedRegression(loss.regression),
    "pose": lambda loss, model: MaskedRegression(loss.regression),
    "decorrelation": lambda loss, model: DecorrelationLoss(
        loss.bank_size, model.codes.emotion, model.audio.feature_dim),
    "pose_decorrelation": lambda loss, model: CodeDecorrelationLoss(),
}
ADVERSARIAL_TERMS = ("gan", "feature_matching")  # need the discriminator, from gan_start on
# a term whose weights file is null, and not in torch hub's cache either, is off
OPTIONAL_FILES = {"vgg": ("vgg_weights", "vgg19")}


def build_stage_networks(model: DictConfig, names: Sequence[str]) -> nn.ModuleDict:
    """The named networks of ``model``; ``generator0`` is G with style [appearance | f_mot]."""
    unknown = [n for n in names if n not in model and n != STAGE1_GENERATOR]
    if unknown:
        raise PdfgcError(f"stage.networks: unknown network {unknown[0]!r}; choose from "
                         f"appearance, motion, audio, generator, {STAGE1_GENERATOR}, "
                         f"{DISCRIMINATOR}")
    nets = build_networks(model, tuple(n for n in names if n != STAGE1_GENERATOR))
    if STAGE1_GENERATOR in names:
        style_dim = model.codes.appearance + model.motion.feature_dim
        nets[STAGE1_GENERATOR] = instantiate(model.generator, style_dim=style_dim)
    return nn.ModuleDict({name: nets[name] for name in names})


def build_terms(loss: DictConfig, model: DictConfig) -> nn.ModuleDict:
    """The loss modules of the terms with a positive weight in ``loss``."""
    terms = {}
    for name, build in TERMS.items():
        if loss.get(name, 0) <= 0:
            continue
        option, network = OPTIONAL_FILES.get(name, (None, None))
        if option and loss.get(option) is None and not default_path(network).is_file():
            log.info("loss term %s is off: loss.%s is null and %s has no %s", name, option,
                     default_path(network).parent, default_path(network).name)
            continue
        terms[name] = build(loss, model)
    return nn.ModuleDict(terms)


def frozen_modules(root: nn.Module) -> list[str]:
    """Names of the outermost submodules whose parameters (one at least) are all frozen."""
    names: list[str] = []
    for name, module in root.named_modules():
        if not name or any(name.startswith(n + ".") for n in names):
            continue
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            names.append(name)
    return names


def read_init_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``nets.<name>.`` tensors of a pdfgc ``.ckpt`` or of a released weights folder."""
    path = Path(path)
    if not path.exists():
        raise PdfgcError(f"stage.init_from: {path} not found; train the earlier stage first "
                         "(same run_group) or set stage.init_from=null")
    if path.is_dir():
        return {f"{LIGHTNING_PREFIX}{name}.{key}": value
                for name, file in RELEASED_FILES.items() if (path / file).is_file()
                for key, value in read_state_dict(path / file).items()}
    state = read_state_dict(path)
    if "state_dict" not in state:
        raise PdfgcError(f"stage.init_from: {path} is not a pdfgc Lightning checkpoint "
                         "(no 'state_dict')")
    return {k: v for k, v in state["state_dict"].items() if k.startswith(LIGHTNING_PREFIX)}


def summarize_keys(keys: Sequence[str]) -> str:
    """'net (n tensors: a, b, c ...)' per network of dotted parameter names."""
    by_net: dict[str, list[str]] = {}
    for key in keys:
        net, rest = key.split(".", 1)
        by_net.setdefault(net, []).append(rest)
    parts = []
    for net, rest in by_net.items():
        more = " ..." if len(rest) > SHOWN_KEYS else ""
        parts.append(f"{net} ({len(rest)}: {', '.join(rest[:SHOWN_KEYS])}{more})")
    return "; ".join(parts) or "none"


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> [0, 1], float32 on the CPU."""
    return ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)


def image_grid(columns: Sequence[torch.Tensor]) -> torch.Tensor:
    """One row per sample, one column per (N, 3, H, W) tensor in [-1, 1] -> (3, H', W')."""
    tiles = torch.stack([to_unit(c) for c in columns], dim=1)  # (N, columns, 3, H, W)
    return torchvision.utils.make_grid(tiles.flatten(0, 1), nrow=len(columns), padding=2,
                                       pad_value=1.0)


class StageModule(pl.LightningModule):
    """Shared machinery of the training stages (see the module docstring).

    Args:
        model: the ``model=`` config (network sizes).
        loss: the ``loss`` config: a weight per term (0 = off, not built) and term options.
        networks: the networks this stage holds, by name.
        optimizer: a partial optimiser (``_partial_: true``), called with parameter groups.
        scheduler: a partial LR scheduler, called with each optimiser; stepped every step.
        name: the stage's name (in log messages).
        freeze: glob patterns of parameter names (``motion.model.*``) that do not train.
        clip: max gradient norm per network (absent: not clipped).
        init_from: an earlier stage's ``.ckpt`` (or a released weights folder) to start from.
        init_map: ``{source: network}``: start this stage's ``network`` from init_from's
            ``source`` (stage 3's G from stage 1's G0). Tensors of the same shape are copied;
            a 2-D tensor whose second dimension differs (a style projection: G0's style is
            [appearance | f_mot], G's [appearance | mouth | emotion | eye | pose]) gets only
            its first ``model.codes.appearance`` columns, the appearance part (rescaled for
            the equalised learning rate's 1 / sqrt(inputs), so each projection starts giving
            the source's output), and keeps its own initialisation in the rest (reported as
            ``partial``; the source's other columns stay in ``init_columns`` for a stage
            that maps them, see :class:`pdfgc.stages.ExpressionStage`).
        sync_batchnorm: batch norm over every process's batch (:class:`GlobalBatchNorm`)
            when training on several processes.
        gather_batch: the terms that couple a batch's samples (a loss class with
            ``whole_batch = True``) see every process's batch (:func:`gather`), so several
            processes train as one with their batches together.
        gan_start: the discriminator (and the terms that need it) start at this step.
    """

    generator_name = "generator"  # the generator :meth:`synthesize` renders with
    swappable: tuple[str, ...] = ()  # codes :meth:`log_images` swaps between samples

    def __init__(self, model: DictConfig, loss: DictConfig, networks: Sequence[str],
                 optimizer: DictConfig, scheduler: DictConfig, name: str,
                 freeze: Sequence[str] = (), clip: Mapping[str, float] | None = None,
                 init_from: str | None = None, init_map: Mapping[str, str] | None = None,
                 sync_batchnorm: bool = False, gather_batch: bool = True, gan_start: int = 0):
        super().__init__()
        self.automatic_optimization = False
        self.stage_name = name
        self.nets = build_stage_networks(model, list(networks))
        self.terms = build_terms(loss, model)
        if not self.terms:
            raise PdfgcError(f"stage {name}: no loss term has a positive weight")
        adversarial = [t for t in ADVERSARIAL_TERMS if t in self.terms]
        if adversarial and DISCRIMINATOR not in self.nets:
            raise PdfgcError(f"loss.{adversarial[0]} needs {DISCRIMINATOR} in stage.networks")
        self.weights = {term: float(loss[term]) for term in self.terms}
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.clip = dict(clip or {})
        self.sync_batchnorm, self.gather_batch = sync_batchnorm, gather_batch
        self.gan_start = gan_start
        self.appearance_dim = model.codes.appearance
        self.init_columns: dict[str, torch.Tensor] = {}
        self.init_report = self.load_init(init_from, init_map or {}) if init_from else None
        self.freeze_parameters(freeze)
        self._logs: dict[str, torch.Tensor] = {}

    # --- what a stage provides -------------------------------------------------------------

    def render(self, batch: Batch) -> dict:
        """Forward pass of a batch: codes, outputs and (for generator stages) ``fake``,
        ``codes`` (the style parts, in order) and ``map`` (the appearance map)."""
        raise NotImplementedError

    def losses(self, batch: Batch, out: dict) -> dict[str, torch.Tensor]:
        """The unweighted loss of each active term (use :meth:`term`, :meth:`image_losses`)."""
        raise NotImplementedError

    # --- networks, freezing, init_from -------------------------------------------------------

    def freeze_parameters(self, patterns: Sequence[str]) -> None:
        """Stop the parameters matching any pattern from training; a pattern matching no
        parameter is a one-line error (a typo would otherwise train what should not)."""
        names = dict(self.nets.named_parameters())
        for pattern in patterns:
            matched = [n for n in names if fnmatch(n, pattern)]
            if not matched:
                raise PdfgcError(f"stage.freeze: {pattern!r} matches no parameter of "
                                 f"{', '.join(self.nets)}")
            for n in matched:
                names[n].requires_grad_(False)
        self.frozen = frozen_modules(self.nets)
        self.train(self.training)

    def train(self, mode: bool = True) -> StageModule:
        """Train mode everywhere but in fully frozen submodules (batch-norm stats stay)."""
        super().train(mode)
        for name in getattr(self, "frozen", ()):
            self.nets.get_submodule(name).eval()
        return self

    def load_init(self, path: str, init_map: Mapping[str, str]) -> dict[str, list[str]]:
        """Load the networks of ``path`` by name (strict=False), ``init_map`` renaming some
        (see the class docstring), and log what did not match."""
        state = read_init_state(path)
        own = self.nets.state_dict()
        sub = {}
        for key, value in state.items():
            net, rest = key[len(LIGHTNING_PREFIX):].split(".", 1)
            sub[f"{init_map.get(net, net)}.{rest}"] = value
        mapped = tuple(f"{net}." for net in init_map.values())
        mismatched = [k for k, v in sub.items() if k in own and own[k].shape != v.shape]
        partial = [k for k in mismatched if k.startswith(mapped) and own[k].ndim == 2 == sub[k].ndim
                   and own[k].shape[0] == sub[k].shape[0]]
        columns = self.appearance_dim  # only the appearance columns (see the class docstring)
        for key in partial:
            # an equalised-lr projection scales its weight by 1 / sqrt(inputs) at run time
            rescale = math.sqrt(own[key].shape[1] / sub[key].shape[1])
            self.init_columns[key] = sub[key][:, columns:]  # (out, source inputs - columns)
            sub[key] = torch.cat([sub[key][:, :columns] * rescale, own[key][:, columns:]], dim=1)
        mismatched = [k for k in mismatched if k not in partial]
        self.nets.load_state_dict({k: v for k, v in sub.items() if k not in mismatched},
                                  strict=False)
        report = {"missing": [k for k in own if k not in sub],
                  "unexpected": [k for k in sub if k not in own], "mismatched": mismatched,
                  "partial": partial}
        incomplete = {k.split(".", 1)[0] for k in report["missing"] + mismatched + partial}
        loaded = sorted({k.split(".", 1)[0] for k in sub if k in own} - incomplete)
        renamed = "".join(f" ({net} from {source})" for source, net in init_map.items())
        _info(f"{self.stage_name}: init_from {path}{renamed}: complete: "
              f"{', '.join(loaded) or 'none'}; missing (new): {summarize_keys(report['missing'])}; "
              f"unexpected (unused): {summarize_keys(report['unexpected'])}; "
              f"shape mismatch (new): {summarize_keys(mismatched)}; "
              f"partial (appearance columns): {summarize_keys(partial)}")
        return report

    def setup(self, stage: str) -> None:
        """Batch norm over every process's batch when asked for and several processes train."""
        if self.sync_batchnorm and self.trainer.world_size > 1:
            self.nets = convert_batchnorm(self.nets)

    # --- optimisation ---------------------------------------------------------------------

    def configure_optimizers(self):
        groups = []
        for name, net in self.nets.items():
            params = [p for p in net.parameters() if p.requires_grad]
            if params:
                groups.append({"params": params, "name": name,
                               "max_grad_norm": self.clip.get(name)})
        main = [g for g in groups if g["name"] != DISCRIMINATOR]
        if not main:
            raise PdfgcError(f"stage {self.stage_name}: every parameter is frozen")
        try:  # torch checks the settings (a negative rate, betas out of range)
            optimizers = [instantiate(self.optimizer_factory)(main)]
            if self.adversarial:
                optimizers.append(instantiate(self.optimizer_factory)(
                    [g for g in groups if g["name"] == DISCRIMINATOR]))
        except ValueError as err:
            raise PdfgcError(f"stage.optimizer: {err}") from None
        return optimizers, [instantiate(self.scheduler_factory)(o) for o in optimizers]

    @property
    def adversarial(self) -> bool:
        """Whether a discriminator trains (it needs the ``gan`` term)."""
        return DISCRIMINATOR in self.nets and "gan" in self.terms and any(
            p.requires_grad for p in self.nets[DISCRIMINATOR].parameters())

    def discriminator_active(self) -> bool:
        return DISCRIMINATOR in self.nets and self.global_step >= self.gan_start

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip each network's gradient norm where ``clip`` asks (after AMP unscaling)."""
        for group in optimizer.param_groups:
            if group.get("max_grad_norm"):
                norm = nn.utils.clip_grad_norm_(group["params"], group["max_grad_norm"])
                self._logs[f"grad_norm/{group['name']}"] = norm.detach()

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        """One iteration: the discriminator's step on detached fakes, then G and the encoders.

        Only G's step counts as a global step, so ``max_steps``, checkpoint names and the
        LR schedule count iterations (Lightning counts every optimiser's step otherwise).
        """
        self._logs = {}
        optimizers = self.optimizers()
        opt_g, *opt_d = optimizers if isinstance(optimizers, list) else [optimizers]
        out = self.render(batch)
        if opt_d and self.discriminator_active():
            self._discriminator_step(opt_d[0], batch["target"], out["fake"].detach())
        with self.toggled_optimizer(opt_g):  # D gets no gradient from G's losses
            losses = self.losses(batch, out)
            if not losses:
                raise PdfgcError(f"stage {self.stage_name}: no loss term is active at step "
                                 f"{self.global_step} (gan and feature_matching start at "
                                 f"stage.gan_start={self.gan_start})")
            total = self.weighted_total(losses)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(total)
            opt_g.step()
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                self._logs[f"lr/{group['name']}"] = torch.tensor(float(group["lr"]))
        self._log("train", losses, total)

    def _discriminator_step(self, optimizer, real: torch.Tensor, fake: torch.Tensor) -> None:
        with self.toggled_optimizer(optimizer):
            real_out, fake_out = self.discriminate(real, fake)
            loss, logs = self.terms["gan"].discriminator(real_out, fake_out)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            # through the strategy (precision plugin, hooks), but not counted as a global step
            self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=_no_closure)
        self._logs["loss/gan_d"] = loss.detach()
        self._logs.update({f"gan/{k}": v for k, v in logs.items()})

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._logs = {}
        out = self.render(batch)
        losses = self.losses(batch, out)
        self._log("val", losses, self.weighted_total(losses))

    # --- loss terms ------------------------------------------------------------------------

    def has_term(self, name: str) -> bool:
        return name in self.terms

    def term(self, name: str, *inputs: torch.Tensor) -> torch.Tensor:
        """The unweighted value of term ``name`` on ``inputs`` (those of every process for a
        ``whole_batch`` term with ``gather_batch``); its logs are kept."""
        if self.gather_batch and getattr(self.terms[name], "whole_batch", False):
            inputs = gather(inputs)
        out = self.terms[name](*inputs)
        loss, logs = out if isinstance(out, tuple) else (out, {})
        self._logs.update({f"{name}/{k}": v for k, v in logs.items()})
        return loss

    def weighted_total(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.weights[name] * value for name, value in losses.items())

    def discriminate(self, real: torch.Tensor, fake: torch.Tensor
                     ) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
        """D on real and fake in one pass (instance norm is per sample): two outputs."""
        out = self.nets[DISCRIMINATOR](torch.cat([real, fake]))
        halves = [[block.chunk(2) for block in scale] for scale in out]
        return ([[b[0] for b in scale] for scale in halves],
                [[b[1] for b in scale] for scale in halves])

    def image_losses(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """The active image terms: gan and feature_matching (once D has started), vgg,
        trunk_perceptual, l1."""
        losses = {}
        if any(self.has_term(n) for n in ADVERSARIAL_TERMS) and self.discriminator_active():
            real_out, fake_out = self.discriminate(real, fake)
            if self.has_term("gan"):
                losses["gan"] = self.term("gan", fake_out)
            if self.has_term("feature_matching"):
                losses["feature_matching"] = self.term("feature_matching", real_out, fake_out,
                                                       real, fake)
        if self.has_term("vgg"):
            losses["vgg"] = self.term("vgg", fake, real)
        if self.has_term("trunk_perceptual"):
            losses["trunk_perceptual"] = self.term("trunk_perceptual", fake, real)
        if self.has_term("l1"):
            losses["l1"] = self.term("l1", fake, real)
        return losses

    # --- rendering and images --------------------------------------------------------------

    def synthesize(self, codes: Mapping[str, torch.Tensor], appearance_map: torch.Tensor
                   ) -> torch.Tensor:
        """Render from the style parts in order; while training, fresh noise maps drawn from
        the run's seed and the step, so a resumed run and every process draw the same."""
        generator = self.nets[self.generator_name]
        noise = None
        if self.training:
            noise = generator.make_noise(torch.initial_seed() + self.global_step,
                                         appearance_map.device)
        return generator(torch.cat(list(codes.values()), dim=1), appearance_map, noise)

    @torch.no_grad()
    def log_images(self, batch: Batch, max_images: int = 8) -> dict[str, torch.Tensor]:
        """Image grids (3, H, W) in [0, 1]: ``reconstruction`` (source | target, the driving
        frame | generated) and, per swappable code, ``swap_<code>`` (target | the sample whose code
        is taken | generated with it)."""
        batch = {k: v[:max_images] for k, v in batch.items()}
        with self.evaluating():
            out = self.render(batch)
            if "fake" not in out:
                return {}
            target = batch["target"]
            grids = {"reconstruction": image_grid([batch["source"], target, out["fake"]])}
            for code in self.swappable:
                codes = dict(out["codes"])
                codes[code] = codes[code].roll(1, dims=0)
                fake = self.synthesize(codes, out["map"])
                grids[f"swap_{code}"] = image_grid([target, target.roll(1, dims=0), fake])
        return grids

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode inside the block, then the previous mode back."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    # --- logging -------------------------------------------------------------

    def _log(self, split: str, losses: Mapping[str, torch.Tensor], total: torch.Tensor) -> None:
        """Log ``{split}/loss/<term>`` (unweighted), ``{split}/loss/total`` (weighted sum)
        and the terms' own values as ``{split}/<term>/<name>``: per step while training,
        averaged over all processes in validation."""
        values = {f"loss/{k}": v.detach() for k, v in losses.items()} | self._logs
        on_epoch = split != "train"
        options = {"on_step": not on_epoch, "on_epoch": on_epoch, "sync_dist": on_epoch}
        self.log_dict({f"{split}/{k}": torch.as_tensor(v, dtype=torch.float32)
                       for k, v in values.items()}, **options)
        self.log(f"{split}/loss/total", total.detach(), prog_bar=True, **options)


def _no_closure() -> None:
    return None


@rank_zero_only
def _info(message: str) -> None:
    log.info(message)
