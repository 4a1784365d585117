"""The package's layers, as the README's Layout section states them: a module imports only
from its own folder and from lower layers."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "src" / "pdfgc"


def readme_layers() -> list[set[str]]:
    """The layers of the README's dependency line, highest first."""
    text = (ROOT / "README.md").read_text()
    line = re.search(r"^`[^`\n]+`(?: →\s*`[^`]+`)+\.$", text, re.MULTILINE | re.DOTALL)
    assert line, "README: no line of `a b` → `c d` layers"
    return [set(group.split()) for group in re.findall(r"`([^`]+)`", line.group(0))]


def unit(parts: tuple[str, ...]) -> str:
    """The top-level module or folder of ``pdfgc`` a dotted path falls in."""
    return parts[0].removesuffix(".py") if parts else "pdfgc"


def imports(path: Path) -> set[str]:
    """The ``pdfgc`` units a module imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                 [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        found |= {unit(tuple(n.split(".")[1:])) for n in names if n.split(".")[0] == "pdfgc"}
    return found


def test_every_module_imports_only_its_own_folder_and_lower_layers():
    layers = readme_layers()
    level = {name: depth for depth, layer in enumerate(layers) for name in layer}
    units = {unit(p.relative_to(PACKAGE).parts) for p in PACKAGE.iterdir()
             if p.name != "__init__.py" and not p.name.startswith((".", "_"))}
    assert units == set(level), (f"README layers miss {units - set(level)} "
                                 f"or name {set(level) - units}")
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        own = unit(path.relative_to(PACKAGE).parts)
        for target in imports(path) - {own, "pdfgc"}:
            if level[target] <= level[own]:
                wrong.append(f"{path.relative_to(ROOT)} imports pdfgc.{target}")
    assert not wrong, "; ".join(sorted(wrong))


def test_the_check_fails_on_an_upward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from pdfgc.stages.base import StageModule\nimport pdfgc.io\n")
    assert imports(module) == {"stages", "io"}
