"""Export cells per notebook: how many, their length (median, max) and how many have no test beneath them.

    python tools/cell_stats.py [nbs]

A cell's length counts its non-blank lines other than `#|` directives. An export cell "has a test beneath it" when
the next code cell is not an export cell. tests/test_notebooks.py holds every notebook to this: a test beneath each
export cell and none longer than MAX_LINES.
"""

import json, statistics, sys
from pathlib import Path

MAX_LINES = 40
EXPORT = {"#| export", "#| exports", "#|export", "#|exports"}


def _source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def export_cells(nb) -> list[tuple[int, int, bool]]:
    "(index among code cells, length, has a test beneath) of each export cell of notebook `nb`."
    code = [c for c in json.loads(Path(nb).read_text())["cells"] if c["cell_type"] == "code"]
    exported = [any(line.strip() in EXPORT for line in _source(c).splitlines()) for c in code]
    out = []
    for i, c in enumerate(code):
        if exported[i]:
            lines = [line for line in _source(c).splitlines() if line.strip() and not line.startswith("#|")]
            out.append((i, len(lines), i + 1 < len(code) and not exported[i + 1]))
    return out


def main(folder="nbs"):
    every = []
    for nb in sorted(Path(folder).rglob("*.ipynb")):
        cells = export_cells(nb)
        if not cells:
            continue
        every += cells
        n = [length for _, length, _ in cells]
        untested = sum(not tested for *_, tested in cells)
        print(
            f"{nb.name:24s} export cells {len(n):3d}  median {statistics.median(n):5.1f}  max {max(n):3d}  "
            f"over 20 {sum(x > 20 for x in n):3d}  no test beneath {untested:3d}"
        )
    n = [length for _, length, _ in every]
    untested = sum(not tested for *_, tested in every)
    print(
        f"{'all':24s} export cells {len(n):3d}  median {statistics.median(n):5.1f}  max {max(n):3d}  "
        f"over 20 {sum(x > 20 for x in n):3d}  no test beneath {untested:3d}"
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
