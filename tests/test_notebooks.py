"""The notebooks stay documents: nbdev_clean form, real markdown, a docstring on every exported module, short export
cells each with a test beneath it, and a package that passes the linter."""
import ast, json, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "nbs").rglob("*.ipynb"))
MODULES = sorted(p for p in (ROOT / "dgspnet").glob("*.py") if p.name not in ("__init__.py", "_modidx.py"))
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tools"))
from cell_stats import MAX_LINES, export_cells  # noqa: E402


def comment_style(cell) -> bool:
    "A markdown cell whose every non-blank line starts with '#', over two or more lines: prose stored as comments."
    lines = [l for l in "".join(cell["source"]).splitlines() if l.strip()]
    return cell["cell_type"] == "markdown" and len(lines) >= 2 and all(l.lstrip().startswith("#") for l in lines)


def test_notebooks_found():
    assert len(NOTEBOOKS) >= 20 and len(MODULES) >= 20


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_is_markdown(nb):
    bad = [i for i, c in enumerate(json.loads(nb.read_text())["cells"]) if comment_style(c)]
    assert not bad, f"{nb}: markdown cells {bad} are stored as comment lines ('# ...'): write them as markdown"


def test_nbdev_clean_form(tmp_path):
    "Cleaning a copy of every notebook (with this repo's settings.ini) changes nothing."
    copies = []
    for nb in NOTEBOOKS:
        dst = tmp_path / nb.relative_to(ROOT)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(nb, dst); copies.append((nb, dst))
    for _, dst in copies:
        subprocess.run([str(BIN / "nbdev_clean"), "--fname", str(dst)], cwd=ROOT, check=True, capture_output=True)
    dirty = [str(nb.relative_to(ROOT)) for nb, dst in copies if nb.read_bytes() != dst.read_bytes()]
    assert not dirty, f"not in nbdev_clean form (run `nbdev_clean`): {dirty}"


@pytest.mark.parametrize("py", MODULES, ids=lambda p: p.name)
def test_module_docstring(py):
    "The first markdown cell `# Title` + `> summary` of a notebook becomes its module's docstring."
    doc = ast.get_docstring(ast.parse(py.read_text()))
    assert doc and len(doc) > 20, f"{py} has no module docstring: give its notebook a '# Title' and '> summary' cell"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_export_cells_small_and_tested(nb):
    "Each export cell holds one idea (at most MAX_LINES lines) and the code cell beneath it shows what it does."
    cells = export_cells(nb)
    long = [(i, n) for i, n, _ in cells if n > MAX_LINES]
    untested = [i for i, _, tested in cells if not tested]
    assert not long, f"{nb}: export cells (code cell index, lines) longer than {MAX_LINES} lines: {long}"
    assert not untested, f"{nb}: export cells (code cell index) with no test or example beneath: {untested}"


def test_package_lint():
    """The exported package, tools/ and benchmarks/ pass ruff with the rules of ruff.toml (fix a finding in the
    notebook it comes from, then export). One exception: nbdev writes each module's `__all__` line itself, wrapped at
    120 characters before its 10-character `__all__ = ` prefix, so a long first `__all__` line is not a finding."""
    r = subprocess.run([str(BIN / "ruff"), "check", "--output-format", "json", "dgspnet", "tools", "benchmarks"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    found = [f for f in json.loads(r.stdout)
             if not (f["code"] == "E501" and _line(f).startswith("__all__ = "))]
    assert not found, "\n".join(f"{f['filename']}:{f['location']['row']}: {f['code']} {f['message']}" for f in found)


def _line(finding) -> str:
    return Path(finding["filename"]).read_text().splitlines()[finding["location"]["row"] - 1]
