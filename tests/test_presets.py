"""The paper presets carry exactly the paper's settings (configs/paper_tables.yaml, transcribed from the paper), and
that copy has the numbers of the workspace's reference transcription where one is beside the repository; every key
a preset sets or the README names is in params.yaml (`dvc exp run -S` only changes keys the file has)."""
import os, re
from pathlib import Path

import pytest
import yaml

from dgspnet.config import PAPER_TABLES, apply_overrides, config_from_dict, read_paper_tables
from dgspnet.experiments import load_presets

ROOT = Path(__file__).resolve().parents[1]
# the workspace's reference transcription, where it is (beside the repository, or in $DGSPNET_REFERENCE)
REFERENCE = Path(os.environ.get("DGSPNET_REFERENCE", ROOT.parent / "shared" / "reference")) / "paper_tables.yaml"
PRESETS = load_presets(ROOT / "configs" / "experiments.yaml")
# one preset per dataset of the paper; paper-sirst3 (the three together, not a setting of the paper): test_combine.py
PAPER = [n for n in PRESETS if n.startswith("paper-") and n != "paper-sirst3"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def readme_keys() -> list:
    "Every `group.key` (or `group.sub.key`) the README names; a name whose last part is a file extension is a file."
    text = (ROOT / "README.md").read_text()
    names = re.findall(r"(?<![\w/.-])((?:base|data|model|pretrain|train|evaluate)(?:\.[a-z_0-9]+)+)", text)
    files = {"dvc", "txt", "pt", "onnx", "npy", "ipynb", "yaml", "json", "csv", "md", "png", "py", "lock"}
    return sorted({n for n in names if n.rsplit(".", 1)[1] not in files})


def in_params(key) -> bool:
    node = PARAMS
    for k in key.split("."):
        if not isinstance(node, dict) or k not in node: return False
        node = node[k]
    return True


def test_readme_keys_are_in_params():
    keys = readme_keys()
    assert {"data.source", "train.steps_per_epoch", "pretrain.steps_per_epoch", "base.max_minutes"} <= set(keys), keys
    assert [k for k in keys if not in_params(k)] == []


def test_preset_keys_are_in_params():
    assert [(n, k) for n, ov in PRESETS.items() for k in ov if not in_params(k)] == []


@pytest.fixture(scope="module")
def paper():
    return read_paper_tables()


def test_paper_tables_are_the_reference_numbers(paper):
    "The repository's copy holds the numbers of the workspace's reference file, table by table (plus its citation)."
    if not REFERENCE.is_file():
        pytest.skip(f"{REFERENCE} not found: no reference transcription here (set DGSPNET_REFERENCE to its folder)")
    assert PAPER_TABLES == ROOT / "configs" / "paper_tables.yaml"
    ref = yaml.safe_load(REFERENCE.read_text())
    assert set(paper) == set(ref) | {"paper"} and paper["paper"]["arxiv"] == "2511.19306"
    for table, facts in ref.items():  # each table of ours: the reference's entries, plus where in the paper it is
        assert {k: v for k, v in paper[table].items() if k != "source"} == facts, table
        assert paper[table]["source"].startswith(("Table", "Sec.")), table


def resolved(name):
    "The Config a preset gives on top of the repository's params.yaml."
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    return config_from_dict(apply_overrides(base, [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
                                                   for k, v in PRESETS[name].items()]))


def test_one_preset_per_dataset(paper):
    assert sorted(PAPER) == sorted(f"paper-{d.lower()}" for d in paper["training"]["splits"])


@pytest.mark.parametrize("name", PAPER)
def test_paper_preset_matches_paper(name, paper):
    cfg, tr = resolved(name), paper["training"]
    pre, train = tr["pretrain"], tr["train"]
    assert (cfg.pretrain.epochs, cfg.pretrain.lr_inversion, cfg.pretrain.lr_other) == (pre["epochs"], pre["lr_inversion"], pre["lr_other"])
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.batch_size, cfg.data.crop) == (train["epochs"], train["lr"], train["batch_size"], train["crop"])
    power = float(re.search(r"power ([\d.]+)", train["scheduler"]).group(1))
    assert cfg.train.poly_power == power
    assert "ViT-B/32" in tr["text_encoder"] and cfg.model.clip_weights == "openai"
    assert cfg.base.precision == "auto" and cfg.base.deterministic is True  # bf16 on a GPU that has it; CUDA-safe determinism
    # Table 1's DGSPNet row is Table 2's all-modules row and Table 3's 2-token row
    t1 = paper["table1_sota"]["rows"]["DGSPNet"]
    assert paper["table2_prompt_modules"]["rows"]["1-1-1"][:3] == t1[:3] == paper["table3_tokens"]["rows"][2]["values"]
    assert (cfg.model.tgca, cfg.model.cross_attn, cfg.model.tgsa, cfg.model.n_fine_tokens) == (True, True, True, 2)
    # the dataset the preset trains on is the one it is named after
    dataset = [d for d in tr["splits"] if name == f"paper-{d.lower()}"][0]
    assert Path(cfg.data.source).name == dataset


@pytest.mark.parametrize("row", ["0-0-0", "1-0-0", "1-1-0", "1-0-1", "0-1-1", "1-1-1"])
def test_table2_presets(row, paper):
    assert row in paper["table2_prompt_modules"]["rows"]
    cfg = resolved(f"table2-{row}")
    assert [int(v) for v in (cfg.model.tgca, cfg.model.cross_attn, cfg.model.tgsa)] == [int(c) for c in row.split("-")]
    assert (cfg.train.epochs, cfg.train.lr, cfg.model.n_fine_tokens) == (800, 1e-4, 2)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4])
def test_table3_presets(n, paper):
    assert n in paper["table3_tokens"]["rows"]
    cfg = resolved(f"table3-{n}")
    assert cfg.model.n_fine_tokens == n and (cfg.model.tgca, cfg.model.cross_attn, cfg.model.tgsa) == (True, True, True)
