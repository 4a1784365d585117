"""The LightningModule every training stage shares.

:class:`StageModule` owns what the stages have in common: the networks (``self.nets``, built
by :func:`pdfgc.networks.build_training_networks` under their names, so a checkpoint loads
through :func:`pdfgc.networks.checkpoints.load_networks`), the weighted loss terms of the
``loss`` config (:mod:`pdfgc.losses.registry`; a term of weight 0 is not built), which
parameters train (``freeze`` patterns; fully
frozen submodules stay in eval mode), the optimisers (one for the discriminator, one for
everything else, a parameter group per network) with manual optimisation alternating D then
G, logging under ``{split}/{kind}/{name}`` keys, :meth:`log_images`, and ``init_from``, the
earlier stage's checkpoint loaded by name (:func:`pdfgc.networks.checkpoints.map_init_state`).

A stage subclass only says how a batch is rendered (:meth:`render`) and which loss terms it
adds up (:meth:`losses`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from fnmatch import fnmatch

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only
from torch import nn

from pdfgc.errors import PdfgcError
from pdfgc.losses.registry import ADVERSARIAL_TERMS, build_terms
from pdfgc.networks import DISCRIMINATOR, build_training_networks
from pdfgc.networks.checkpoints import map_init_state, read_init_state, summarize_keys
from pdfgc.stages.callbacks import image_grid
from pdfgc.stages.distributed import convert_batchnorm, gather

log = logging.getLogger(__name__)

Batch = Mapping[str, torch.Tensor]

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
        self.nets = build_training_networks(model, list(networks))
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
        own = self.nets.state_dict()
        sub, report, self.init_columns = map_init_state(own, read_init_state(path), init_map,
                                                        self.appearance_dim)
        self.nets.load_state_dict(sub, strict=False)
        mismatched, partial = report["mismatched"], report["partial"]
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

    def image_losses(self, batch: Batch, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """The active terms on ``fake``, a render of ``batch["target"]``: gan and
        feature_matching (once D has started), vgg, trunk_perceptual, l1, face_parts."""
        real = batch["target"]
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
        if self.has_term("face_parts"):
            losses["face_parts"] = self.term("face_parts", fake, real, batch["landmarks"])
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
