"""Tests of pdfgc.io: atomic writes, JSON lines, run configs."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from pdfgc.errors import PdfgcError
from pdfgc.io import (
    append_jsonl,
    atomic_path,
    read_jsonl,
    save_config,
    write_jsonl,
)


def test_atomic_path_success(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "dir" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".txt" and tmp.name.startswith(".")
        tmp.write_text("done")
        assert not target.exists()
    assert target.read_text() == "done"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_atomic_path_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_jsonl_write_append_read(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "rows.jsonl"
    write_jsonl(path, [{"a": 1}, {"a": 2}])
    append_jsonl(path, {"a": 3, "b": [1.5, None]})
    append_jsonl(tmp_path / "new" / "rows.jsonl", {"x": "y"})
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}, {"a": 3, "b": [1.5, None]}]
    assert read_jsonl(tmp_path / "new" / "rows.jsonl") == [{"x": "y"}]
    assert sorted(p.name for p in path.parent.iterdir()) == ["rows.jsonl"]
    write_jsonl(path, [])
    assert read_jsonl(path) == []


def test_read_jsonl_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n')
    with pytest.raises(PdfgcError, match=r"rows\.jsonl:3: not a JSON line") as err:
        read_jsonl(path)
    assert "\n" not in str(err.value)
    with pytest.raises(PdfgcError, match="missing.jsonl: not found"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_append_jsonl_where_a_file_stands_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(PdfgcError, match="a file stands in the way"):
        append_jsonl(tmp_path / "file" / "rows.jsonl", {"a": 1})


def test_save_config_writes_the_resolved_config(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"name": "run", "out": "${name}/out", "nested": {"n": 2}})
    save_config(cfg, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()) == {
        "name": "run", "out": "run/out", "nested": {"n": 2}}


def test_io_does_not_import_torch() -> None:
    code = "import sys, pdfgc.io; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
