"""Write files atomically: readers never see a half-written output."""

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pdfgc.errors import PdfgcError


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
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        check_folder_free(final)
        raise
    tmp = final.with_name(f".{final.stem}.tmp-{secrets.token_hex(4)}{final.suffix}")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)
