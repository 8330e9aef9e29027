"""The notebooks stay documents: nbdev_clean form, real markdown, and a docstring on every exported module."""
import ast, json, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "nbs").rglob("*.ipynb"))
MODULES = sorted(p for p in (ROOT / "dgspnet").glob("*.py") if p.name not in ("__init__.py", "_modidx.py"))
BIN = Path(sys.executable).parent


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
