"""The ground floor for files: atomic writes and saves, state-dict reading and checking, one
JSON-lines reader and writer, one run-config writer, and device resolution.

Readers never see a half-written output, and every failure a user can cause is a one-line
:class:`PdfgcError`. This module must not import torch when it loads (:mod:`pdfgc.media`,
which must not, takes its atomic writes from here): the helpers that need torch import it
when called.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from pdfgc.errors import PdfgcError

if TYPE_CHECKING:
    import torch
    from torch import nn

SHOWN_KEYS = 3


# --------------------------------------------------------------------------- atomic writes


def check_folder_free(path: str | os.PathLike) -> None:
    """A one-line error if a file stands where a folder above ``path`` must be (nothing is
    created: writers check their output with it before long work)."""
    final = Path(path)
    blocker = next((p for p in final.parents if p.is_file()), None)
    if blocker is not None:
        raise PdfgcError(f"{final}: cannot create its folder, a file stands in the way "
                         f"({blocker})")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` that replaces ``path`` when the block succeeds.

    The temporary file (``.<stem>.tmp-XXXXXXXX<suffix>``, same folder and suffix so that
    writers guessing the format from the name still work) is not created here; the block
    writes it. On a normal exit it is renamed over ``path``; if the block raises it is
    deleted. Parent folders are created (a one-line error where a file stands in the way).
    """
    final = Path(path)
    _make_parents(final)
    tmp = final.with_name(f".{final.stem}.tmp-{secrets.token_hex(4)}{final.suffix}")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


def _make_parents(final: Path) -> None:
    """Create the folders above ``final`` (a one-line error where a file stands in the way)."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        check_folder_free(final)
        raise


def atomic_save(obj: object, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


# --------------------------------------------------------------------------- state dicts


def read_state_dict(path: str | Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Load a checkpoint file on the CPU (``mmap``: tensors read only when used); a one-line
    error if it is missing or unreadable."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise PdfgcError(f"{path}: checkpoint file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises several types for truncated / foreign files
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise PdfgcError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): "
                         f"{reason}") from None
    if not isinstance(state, Mapping):
        raise PdfgcError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return dict(state)


def check_state_dict(source: str, module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Raise a one-line error listing missing, unexpected and mis-shaped keys, if any."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    for label, keys in (("shape mismatch", shapes), ("missing", missing),
                        ("unexpected", unexpected)):
        if keys:
            more = f" (+{len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
            problems.append(f"{label}: {', '.join(keys[:SHOWN_KEYS])}{more}")
    if problems:
        raise PdfgcError(f"{source}: does not match the configured model; " + "; ".join(problems))


# --------------------------------------------------------------------------- JSON lines


def read_jsonl(path: str | Path) -> list[Any]:
    """Every JSON line of ``path``, in order (blank lines skipped); a one-line error if the
    file is missing, naming ``file:line`` at a line that is not JSON."""
    path = Path(path)
    if not path.is_file():
        raise PdfgcError(f"{path}: not found")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise PdfgcError(f"{path}:{number}: not a JSON line ({err.msg})") from None
    return records


def write_jsonl(path: str | Path, records: Iterable[Any]) -> None:
    """``records`` as JSON lines in ``path``, in their order, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(record) + "\n" for record in records))


def append_jsonl(path: str | Path, record: Any) -> None:
    """Append ``record`` to ``path`` as one JSON line, in one write to the file opened for
    appending: cheap enough for a line a training step (a log stream; a results file that
    must never hold half a line is rewritten with :func:`write_jsonl`). Parent folders are
    created (a one-line error where a file stands in the way)."""
    path = Path(path)
    line = json.dumps(record) + "\n"
    _make_parents(path)
    with open(path, "a") as f:
        f.write(line)


# --------------------------------------------------------------------------- run configs


def save_config(cfg: DictConfig | Mapping[str, Any], path: str | Path) -> None:
    """The resolved config as YAML, written atomically (by rank zero)."""
    write_text(path, OmegaConf.to_yaml(cfg, resolve=True))


def write_text(path: str | Path, text: str) -> None:
    """``text`` in ``path``, written atomically, by rank zero."""
    if _global_rank() != 0:
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _global_rank() -> int:
    """This process's rank as Lightning's ``rank_zero_only`` holds it (Lightning sets it from
    the launcher's environment when it loads, and its strategies set it); 0 where Lightning
    has not loaded, so no Lightning run spans processes."""
    from lightning_utilities.core.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0)


# --------------------------------------------------------------------------- devices


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; asking for missing CUDA is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PdfgcError(f"device={name} but no CUDA GPU is available; use device=cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise PdfgcError(f"device must be auto, cpu or cuda[:N], not {name!r}") from None
