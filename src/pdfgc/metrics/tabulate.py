"""Print evaluation runs side by side: ``python -m pdfgc.metrics.tabulate RUN [RUN ...]``.

A run is an evaluation folder (holding ``metrics.jsonl``) or a JSON-lines file written by
``evaluate.py``; its latest evaluation (the last line) is shown, or every one with ``--all``.
Rows are the headline figures; ``--metrics fid,lse`` keeps the rows whose name starts with
one of the prefixes; ``--markdown`` prints a Markdown table.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

from pdfgc.errors import PdfgcError, exit_on_user_error
from pdfgc.io import read_jsonl

RESULTS_FILE = "metrics.jsonl"


def read_records(path: str | Path) -> list[dict]:
    """Every evaluation record of a run folder or JSON-lines file, oldest first."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise PdfgcError(f"{file}: no evaluation results here")
    records = read_jsonl(file)
    if not records:
        raise PdfgcError(f"{file}: empty")
    return records


def format_value(value: object) -> str:
    """A figure for a table: 4 significant digits, ``-`` for missing or NaN."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-" if value is None else str(value)
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.1f}" if abs(value) >= 1000 else f"{value:.4g}"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                 markdown: bool = False) -> str:
    """Rows of strings as an aligned text table (first column left, others right)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [str(c).ljust(w) if i == 0 else str(c).rjust(w)
                  for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return f"| {' | '.join(padded)} |" if markdown else "  ".join(padded)

    rule = ("|" + "|".join("-" * (w + 2) for w in widths) + "|" if markdown
            else "  ".join("-" * w for w in widths))
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def tabulate(runs: Sequence[tuple[str, dict]], prefixes: Sequence[str] = (),
             markdown: bool = False) -> str:
    """The headline figures of labelled evaluation records, one column per record."""
    names: list[str] = []
    for _, record in runs:
        names += [k for k in record.get("results", {}) if k not in names]
    if prefixes:
        names = [n for n in names if any(n.startswith(p) for p in prefixes)]
    rows = [[name, *(format_value(record.get("results", {}).get(name)) for _, record in runs)]
            for name in names]
    return format_table(["metric", *(label for label, _ in runs)], rows, markdown)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pdfgc.metrics.tabulate",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="evaluation folders or metrics.jsonl files")
    parser.add_argument("--all", action="store_true", help="every evaluation, not the last")
    parser.add_argument("--metrics", default="", help="comma-separated name prefixes")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        runs = []
        for run in args.runs:
            records = read_records(run)
            label = Path(run).name if Path(run).is_dir() else Path(run).parent.name
            chosen = list(enumerate(records)) if args.all else [(len(records) - 1, records[-1])]
            runs += [(f"{label}#{i}" if args.all else label, record) for i, record in chosen]
        prefixes = [p for p in args.metrics.split(",") if p]
        print(tabulate(runs, prefixes, args.markdown))


if __name__ == "__main__":
    main()
