"""The one user-facing error type of pdfgc, the one choice check, and how the entry points
report it."""

import sys
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import TypeVar

from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

T = TypeVar("T")
CONFIG_ERRORS = (InterpolationResolutionError, MissingMandatoryValue)  # a config the user wrote


class PdfgcError(Exception):
    """A problem with the user's input (file, checkpoint, config) that deserves one clear line.

    The entry points catch it, print ``error: <message>`` and exit with status 2; anything
    else is a bug and keeps its traceback.
    """


def check_choice(option: str, value: T, choices: Collection[T]) -> T:
    """``value`` if it is one of ``choices``, else a one-line :class:`PdfgcError`."""
    if value not in choices:
        raise PdfgcError(f"{option}={value!r}: expected one of {', '.join(map(str, choices))}")
    return value


def error_line(err: PdfgcError) -> str:
    """The one line every entry point (the mains, the app) shows for ``err``."""
    return f"error: {err}"


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a :class:`PdfgcError`, or a config value that does not resolve (an interpolation
    to a missing key, a ``???`` left unset), into ``error: <message>`` on stderr and exit
    status 2."""
    try:
        yield
    except PdfgcError as err:
        print(error_line(err), file=sys.stderr)
        sys.exit(2)
    except CONFIG_ERRORS as err:
        message = str(err).splitlines()[0]  # OmegaConf adds its full_key and type below
        print(error_line(PdfgcError(f"config {err.full_key}: {message}")), file=sys.stderr)
        sys.exit(2)
