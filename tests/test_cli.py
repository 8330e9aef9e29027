"""Every console script answers --help without importing torch, and names its arguments."""
import configparser, subprocess, sys, time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
cfg = configparser.ConfigParser(delimiters=["="]); cfg.read(ROOT / "settings.ini")
SCRIPTS = dict(s.split("=", 1) for s in cfg["DEFAULT"]["console_scripts"].split())


def test_cli_module_is_light():
    code = "import sys, dgspnet.cli, dgspnet.experiments; print(sorted(m for m in ('torch', 'numpy', 'open_clip') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", r.stdout


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help(name):
    r = subprocess.run([str(BIN / name), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "usage:" in r.stdout and "--" in r.stdout, r.stderr[-2000:]
    module = SCRIPTS[name].split(":")[0]
    assert module in ("dgspnet.cli", "dgspnet.experiments"), f"{name} points at {module}, which imports torch"
