"""Tests of pdfgc.errors: the one choice check."""

import pytest

from pdfgc.errors import PdfgcError, check_choice


def test_check_choice_names_the_option_the_value_and_the_choices() -> None:
    assert check_choice("mode", "b", ("a", "b")) == "b"
    assert check_choice("size", 32, (8, 32)) == 32
    with pytest.raises(PdfgcError) as err:
        check_choice("mode", "c", ("a", "b"))
    assert str(err.value) == "mode='c': expected one of a, b"
    with pytest.raises(PdfgcError, match="size=16: expected one of 8, 32"):
        check_choice("size", 16, (8, 32))
    with pytest.raises(PdfgcError, match="backend='x': expected one of dlib, sidecar"):
        check_choice("backend", "x", {"dlib": 1, "sidecar": 2})
