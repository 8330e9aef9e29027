"""Run a console script in-process (its `@call_parse` function), as the tests of predict, score and export do."""
import sys

import pytest


def run_cli(cli, prog, argv, monkeypatch, capsys):
    "`cli` called as `prog argv...`; returns (exit status, stdout, stderr)."
    monkeypatch.setattr(sys, "argv", [prog, *map(str, argv)])
    with pytest.raises(SystemExit) as e: cli()
    out, err = capsys.readouterr()
    return e.value.code, out, err
