"""The web app: ``make app``, or ``python -m pdfgc.app [port=..] [weights=..]`` (conf/app.yaml).

A Gradio page on ``host:port`` that renders a talking head from a portrait, speech (upload,
microphone, or typed text spoken by espeak-ng) and optional pose, emotion and eye driver
clips, with the five switches, the driver policy and, for weights whose heads were regressed
to head angles, blink and gaze, those numbers (:class:`~pdfgc.inference.model.Dials`).
Rendering is the inference pipeline's (:class:`~pdfgc.inference.pipeline.Renderer`), with one
model kept loaded per (weights, device, precision), so bad input gets the line ``infer.py``
prints. Everything is written, atomically, under the run folder (``outputs/app/<time>/``).
"""

from __future__ import annotations

import html
import itertools
import logging
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import gradio as gr
from omegaconf import DictConfig, OmegaConf

from pdfgc.errors import PdfgcError, error_line, exit_on_user_error
from pdfgc.features import SAMPLE_RATE
from pdfgc.inference.model import (
    DIAL_MODES,
    Controls,
    Dials,
    Regression,
    TalkingHeadModel,
    saved_config,
    trained_regression,
)
from pdfgc.inference.pipeline import DRIVER_POLICIES, FACTORS, Job, Renderer
from pdfgc.io import save_config
from pdfgc.media import write_wav
from pdfgc.networks import INFERENCE_NETWORKS
from pdfgc.networks.checkpoints import RELEASED_FILES
from pdfgc.samples import can_speak, make_sample, speak

log = logging.getLogger(__name__)

SWITCHES = tuple(f.name for f in fields(Controls))
RENDER_KEYS = ("device", "precision", "batch_size", "crop", "crf")  # the Renderer's, from here
BUILT_IN = "built-in: random tiny weights (untrained)"


@dataclass(frozen=True)
class Weights:
    """An entry of the page's weights list: the files, the model settings they fit, and what
    their heads were regressed to (None: no numeric dials)."""

    label: str
    path: Path
    model: DictConfig
    regression: Regression | None = None


def weights_entry(path: Path, model: DictConfig) -> Weights:
    """``path`` as a weights entry: a released folder (``model`` settings) or a pdfgc
    checkpoint (its run's model settings, if saved, and its heads' regression)."""
    if path.is_dir():
        return Weights(f"released: {path}", path, model)
    if not path.is_file():
        raise PdfgcError(f"weights={path}: not found")
    saved = saved_config(path).get("model")
    return Weights(f"run: {path}", path, OmegaConf.create(saved) if saved else model,
                   trained_regression(path))


def find_weights(folders: Sequence[str], model: DictConfig) -> list[Weights]:
    """Released-weights folders (all four files) and pdfgc training runs (``checkpoints/
    last.ckpt`` of a stage that trains every network inference needs) under ``folders``."""
    found = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        for generator in sorted(folder.rglob(RELEASED_FILES["generator"])):
            if all((generator.parent / name).is_file() for name in RELEASED_FILES.values()):
                found.append(weights_entry(generator.parent, model))
        for ckpt in sorted(folder.rglob("checkpoints/last.ckpt")):
            networks = (saved_config(ckpt).get("stage") or {}).get("networks") or ()
            if set(INFERENCE_NETWORKS) <= set(networks):
                found.append(weights_entry(ckpt, model))
    return found


@dataclass(frozen=True)
class Rendered:
    """The files of one render, in its own folder."""

    result: Path
    panel: Path
    config: Path


class Studio:
    """What the page does, apart from the page: the weights on offer, the built-in sample, the
    loaded models, and rendering into the run folder."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.folder = Path(cfg.paths.output_dir)
        self.sample = make_sample(self.folder / "sample", cfg.tiny_model)
        found = find_weights(cfg.weights_dirs, cfg.model)
        self.trained = bool(found)
        chosen = Path(cfg.weights or cfg.demo_weights).resolve()
        if cfg.weights and all(w.path.resolve() != chosen for w in found):
            found.insert(0, weights_entry(chosen, cfg.model))
        builtin = Weights(BUILT_IN, self.sample / "weights", cfg.tiny_model)
        self.weights = {w.label: w for w in (*found, builtin)}
        self.default = next((w.label for w in found if w.path.resolve() == chosen),
                            (found[0] if found else builtin).label)
        self.render_cfg = OmegaConf.create({
            **{key: cfg[key] for key in RENDER_KEYS},
            "max_audio_seconds": cfg.limits.audio_seconds, "panel": False, "progress": False})
        self.loaded: OrderedDict[tuple[str, str, str], Renderer] = OrderedDict()
        self.lock = threading.Lock()
        self.numbers = itertools.count(1)

    def notice(self, label: str) -> str:
        """What the page says about the chosen weights (the built-in ones are untrained)."""
        if label != BUILT_IN:
            return ""
        where = "pick trained weights above" if self.trained else (
            "no trained weights were found under " + ", ".join(self.cfg.weights_dirs)
            + "; train some with `make demo` or put the four released files in a folder there")
        return (f"**Random, untrained tiny weights**: the pipeline runs, but the face follows "
                f"nothing ({where}).")

    def regression(self, label: str) -> Regression:
        """What the chosen weights' heads were regressed to (nothing, for most)."""
        return self._weights(label).regression or Regression()

    def sample_inputs(self) -> tuple[str, str, str, None, str]:
        """The built-in sample: portrait, speech, pose driver, no emotion driver, eye driver."""
        portrait, speech, driver = (str(self.sample / name) for name in
                                    ("portrait.png", "speech.wav", "driver.mp4"))
        return portrait, speech, driver, None, driver

    def speak(self, text: str) -> str:
        """``text`` spoken by espeak-ng into a wav of the run folder; returns its path."""
        text = (text or "").strip()
        limit = self.cfg.limits.text_characters
        if not text:
            raise PdfgcError("type the text to speak first")
        if len(text) > limit:
            raise PdfgcError(f"the text has {len(text)} characters; at most {limit} are spoken "
                             "here (limits.text_characters)")
        path = self.folder / "speech" / f"{next(self.numbers):04d}.wav"
        write_wav(path, speak(text), SAMPLE_RATE)
        return str(path)

    def render(self, label: str, portrait: str | None, speech: str | None,
               drivers: dict[str, str | None], controls: Controls, policy: str, dials: Dials,
               progress: Callable[[int, int], None] | None = None) -> Rendered:
        """Render one request into ``renders/<n>/`` (result, panel, config); on failure
        nothing of it is left."""
        if portrait is None:
            raise PdfgcError("a portrait is needed: upload one or load the built-in sample")
        if speech is None:
            raise PdfgcError("speech is needed: upload, record or type it")
        weights = self._weights(label)
        folder = self.folder / "renders" / f"{next(self.numbers):04d}"
        job = Job(audio=speech, appearance=portrait, output=str(folder / "result.mp4"),
                  **drivers, controls=controls, driver_policy=policy, dials=dials,
                  panel=str(folder / "panel.mp4"))
        job.check()  # before a first render of these weights loads them
        try:
            self._renderer(weights).render(job, progress)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        config = folder / "config.yaml"
        settings = {"weights": str(weights.path), "model": weights.model, **asdict(job),
                    **{key: self.cfg[key] for key in RENDER_KEYS},
                    "noise_seed": self.cfg.noise_seed,
                    "max_audio_seconds": self.render_cfg.max_audio_seconds}
        save_config(OmegaConf.create(settings), config)
        return Rendered(Path(job.output), Path(job.panel), config)

    def _weights(self, label: str) -> Weights:
        if label not in self.weights:
            raise PdfgcError(f"unknown weights {label!r}; reload the page")
        return self.weights[label]

    def _renderer(self, weights: Weights) -> Renderer:
        """The renderer of ``weights``, loaded once per (weights, device, precision); the
        least recently used is dropped beyond ``limits.loaded_models``."""
        key = (str(weights.path), self.cfg.device, self.cfg.precision)
        with self.lock:
            if key not in self.loaded:
                while len(self.loaded) >= max(self.cfg.limits.loaded_models, 1):
                    self.loaded.popitem(last=False)
                model = TalkingHeadModel.from_config(weights.model, str(weights.path),
                                                     self.cfg.noise_seed, self.cfg.compile)
                self.loaded[key] = Renderer(self.render_cfg, model)
            self.loaded.move_to_end(key)
            return self.loaded[key]


@contextmanager
def shown_in_page() -> Iterator[None]:
    """A :class:`PdfgcError` becomes the page's error message: the line ``infer.py`` prints."""
    try:
        yield
    except PdfgcError as err:
        line = error_line(err)
        log.warning(line)
        raise gr.Error(html.escape(line), duration=None, print_exception=False) from None


def _path(payload: dict | None) -> str | None:
    """The server-side path of an uploaded file (events run without Gradio's preprocessing,
    so that every input is checked, and reported, by the pipeline)."""
    return payload["path"] if payload else None


def build_page(studio: Studio) -> gr.Blocks:
    """The page: inputs on the left, the result and the downloads on the right."""
    regression = studio.regression(studio.default)
    with gr.Blocks(title="pdfgc", analytics_enabled=False) as page:
        gr.Markdown("# pdfgc: a talking head whose lips, pose, blink, gaze and emotion are "
                    "each driven apart")
        notice = gr.Markdown(studio.notice(studio.default), elem_id="notice")
        with gr.Row():
            with gr.Column():
                weights = gr.Dropdown(list(studio.weights), value=studio.default,
                                      label="Weights", elem_id="weights")
                sample = gr.Button("Load the built-in sample", elem_id="sample")
                portrait = gr.Image(label="Portrait", type="filepath", sources=["upload"],
                                    elem_id="portrait")
                speech = gr.Audio(label="Speech", type="filepath",
                                  sources=["upload", "microphone"], elem_id="speech")
                if can_speak():
                    with gr.Row():
                        text = gr.Textbox(label="...or type it (spoken by espeak-ng)", scale=4)
                        speak = gr.Button("Speak", scale=1)
                    speak.click(_speak(studio), text, speech)
                gr.Markdown("**Drivers** (optional; one clip may drive several factors; "
                            "none: the portrait's own pose, eyes and expression)")
                with gr.Row():
                    drivers = [gr.Video(label=f"{factor} driver", sources=["upload"],
                                        elem_id=f"{factor}-driver") for factor in FACTORS]
                switches = gr.CheckboxGroup(list(SWITCHES), value=list(SWITCHES),
                                            label="Follow their input (off: neutral)")
                policy = gr.Radio(list(DRIVER_POLICIES), value="loop",
                                  label="A driver shorter than the speech")
                with gr.Group(visible=regression.pose_scale is not None) as pose_dials:
                    pose_mode = gr.Radio(list(DIAL_MODES), value="driver",
                                         label="Head angles (degrees)")
                    angles = [gr.Slider(-40, 40, value=0, step=1, label=name)
                              for name in ("yaw", "pitch", "roll")]
                eye_visible = regression.blink_dims, regression.gaze_dims
                with gr.Group(visible=any(v is not None for v in eye_visible)) as eye_dials:
                    eye_mode = gr.Radio(list(DIAL_MODES), value="driver", label="Eyes")
                    blink = gr.Slider(-1, 1, value=0, step=0.05, label="blink (1 = closed)",
                                      visible=regression.blink_dims is not None)
                    gaze = [gr.Slider(-1, 1, value=0, step=0.05, label=f"gaze {axis}",
                                      visible=regression.gaze_dims is not None)
                            for axis in ("x (> 0: image right)", "y (> 0: down)")]
                render = gr.Button("Render", variant="primary", elem_id="render")
            with gr.Column():
                result = gr.Video(label="Result", interactive=False, elem_id="result")
                downloads = gr.File(label="Panel (portrait | result | drivers) and config",
                                    file_count="multiple", interactive=False,
                                    elem_id="downloads")
        sample.click(studio.sample_inputs, None, [portrait, speech, *drivers])
        weights.change(_weights_changed(studio), weights,
                       [notice, pose_dials, pose_mode, eye_dials, eye_mode, blink, *gaze])
        render.click(_render(studio),
                     [weights, portrait, speech, *drivers, switches, policy, pose_mode, *angles,
                      eye_mode, blink, *gaze],
                     [result, downloads], preprocess=False,
                     concurrency_limit=studio.cfg.limits.concurrent_renders)
    return page


def _speak(studio: Studio) -> Callable[[str], str]:
    def speak(text: str) -> str:
        with shown_in_page():
            return studio.speak(text)
    return speak


def _weights_changed(studio: Studio) -> Callable[[str], tuple]:
    def changed(label: str) -> tuple:
        """The notice, and the dials these weights give meaning to (modes reset)."""
        with shown_in_page():
            found = studio.regression(label)
        blink, gaze = found.blink_dims is not None, found.gaze_dims is not None
        return (studio.notice(label), gr.Group(visible=found.pose_scale is not None), "driver",
                gr.Group(visible=blink or gaze), "driver", gr.Slider(visible=blink),
                gr.Slider(visible=gaze), gr.Slider(visible=gaze))
    return changed


def _render(studio: Studio) -> Callable[..., tuple]:
    def render(label, portrait, speech, pose, emotion, eye, switches, policy, pose_mode, yaw,
               pitch, roll, eye_mode, blink, gaze_x, gaze_y,
               progress=gr.Progress()) -> tuple:  # noqa: B008 (how Gradio passes its bar)
        """One click of Render: the result video, and the panel and config to download."""
        progress(0, desc="loading the weights and reading the inputs")
        with shown_in_page():
            done = studio.render(
                label, _path(portrait), _path(speech),
                {"pose": _path(pose), "emotion": _path(emotion), "eye": _path(eye)},
                Controls(**{name: name in (switches or ()) for name in SWITCHES}), policy,
                Dials(pose_mode, yaw, pitch, roll, eye_mode, blink, gaze_x, gaze_y),
                lambda chunks, total: progress((chunks, total), desc="rendering",
                                               unit="chunks"))
        return str(done.result), [str(done.panel), str(done.config)]
    return render


def launch(cfg: DictConfig) -> gr.Blocks:
    """Build the page of ``cfg`` and serve it on ``cfg.host:cfg.port`` (without blocking)."""
    studio = Studio(cfg)
    page = build_page(studio)
    page.queue(max_size=cfg.limits.queue)
    try:
        page.launch(server_name=cfg.host, server_port=cfg.port, share=False, quiet=True,
                    prevent_thread_lock=True, ssr_mode=False, show_error=True,
                    allowed_paths=[str(studio.folder)],
                    max_file_size=f"{cfg.limits.upload_mb}mb")
    except OSError as err:
        raise PdfgcError(f"cannot serve on {cfg.host}:{cfg.port} ({err}); "
                         "choose another with port=") from None
    return page


def serve(cfg: DictConfig) -> None:
    """Launch the page, print its address, and serve until stopped (``app.py``)."""
    with exit_on_user_error():
        page = launch(cfg)
    print(f"pdfgc app: {page.local_url}", flush=True)
    page.block_thread()
