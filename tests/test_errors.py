"""Tests of pdfgc.errors: the one choice check and how the mains report user errors."""

import pytest
from omegaconf import OmegaConf

from pdfgc.errors import PdfgcError, check_choice, exit_on_user_error


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


@pytest.mark.parametrize(("config", "line"), [
    ({"a": "${nope}"}, "error: config a: Interpolation key 'nope' not found"),
    ({"a": "???"}, "error: config a: Missing mandatory value: a"),
])
def test_a_config_that_does_not_resolve_is_one_line_and_exit_2(capsys, config, line) -> None:
    cfg = OmegaConf.create(config)
    with pytest.raises(SystemExit) as done, exit_on_user_error():
        cfg.a  # noqa: B018 (reading the value is what fails)
    assert done.value.code == 2
    assert capsys.readouterr().err.strip() == line
