"""The data layer's guards, counts, SIRST v2 layout, folder matching, prepare CLI and loader contract.

Every case builds its dataset in a temporary folder, checks the message text, and checks that no file of the
source folder changed (content hash and mtime of every file, before and after).
"""
import hashlib, json, os, subprocess, sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from dgspnet.data import (DatasetError, IRSTDDataset, compute_stats, load_manifest, normalize, prepare_config,
                          prepare_dataset, read_image, run_prepare, validate_dataset)
from dgspnet.cli import prepare_cli


def _png(path, arr):
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path); return path


def _tiny(root, train=("a0", "a1", "a2"), test=("b0", "b1"), hw=(20, 24), img_dir="images", msk_dir="masks",
          suffix="", lists=("train.txt", "test.txt"), seed=0):
    "A small dataset, one target of 2 pixels per mask, written without the code under test."
    root = Path(root); rng = np.random.default_rng(seed)
    for n in (*train, *test):
        _png(root/img_dir/f"{n}.png", rng.integers(0, 256, hw, dtype=np.uint8))
        m = np.zeros(hw, np.uint8); m[hw[0]//2, hw[1]//2:hw[1]//2 + 2] = 255
        _png(root/msk_dir/f"{n}{suffix}.png", m)
    for f, names in zip(lists, (train, test)):
        (root/f).parent.mkdir(parents=True, exist_ok=True); (root/f).write_text("\n".join(names) + "\n")
    return root


def _snapshot(root):
    return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def _cfg(source, skip_bad=False, resize_masks=False):
    return SimpleNamespace(data=SimpleNamespace(source=str(source), skip_bad=skip_bad, resize_masks=resize_masks,
                                                splits=None))


# 1. split entries resolve inside the dataset folder

@pytest.mark.parametrize("entry", ["../../outside", "../outside", "ABS"])
def test_entry_outside_the_dataset(tmp_path, entry):
    root = _tiny(tmp_path/"src"/"ds")
    outside = _png(tmp_path/"src"/"outside.png", np.full((20, 24), 255, np.uint8))  # readable, would pass as its own mask
    _png(tmp_path/"outside.png", np.full((20, 24), 255, np.uint8))
    entry = str(outside.with_suffix("")) if entry == "ABS" else entry
    (root/"train.txt").write_text(f"a0\n{entry}\na1\n")
    before = _snapshot(tmp_path/"src")
    with pytest.raises(DatasetError) as e: prepare_dataset(root, tmp_path/"out")
    assert e.value.problems == [f"train.txt: entry '{entry}' leads outside the dataset folder (absolute, or '..' out of "
                                f"images/ and masks/); an entry must be a sample name"]
    assert f"train.txt: entry '{entry}'" in str(e.value)
    assert not (tmp_path/"out"/"manifest.json").exists()
    man = json.loads(prepare_dataset(root, tmp_path/"out", skip_bad=True).read_text())
    assert man["train"] == ["a0", "a1"] and [s["name"] for s in man["skipped"]] == [entry]
    assert _snapshot(tmp_path/"src") == before


# 2. zero variance and non-finite pixels fail at prepare time, naming files

def test_zero_variance(tmp_path):
    root = _tiny(tmp_path/"ds")
    for n in ("a0", "a1", "a2"): _png(root/"images"/f"{n}.png", np.full((20, 24), 77, np.uint8))
    before = _snapshot(root)
    with pytest.raises(DatasetError) as e: prepare_dataset(root, tmp_path/"out")
    msg = str(e.value)
    assert "the training images have zero variance (every pixel is 77/255), so normalization would divide by 0" in msg
    assert msg.endswith("images/a0.png, images/a1.png, images/a2.png")
    assert not (tmp_path/"out"/"manifest.json").exists() and _snapshot(root) == before


def test_zero_variance_is_exact(tmp_path):
    "One pixel differing among all training pixels is variance, however small."
    root = _tiny(tmp_path/"ds")
    for n in ("a0", "a1", "a2"): _png(root/"images"/f"{n}.png", np.full((20, 24), 77, np.uint8))
    x = np.full((20, 24), 77, np.uint8); x[0, 0] = 78; _png(root/"images"/"a2.png", x)
    assert compute_stats(root, ["a0", "a1", "a2"])["std"] > 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_pixels(tmp_path, bad):
    root = _tiny(tmp_path/"ds")
    x = np.random.default_rng(1).random((20, 24), np.float32); x[2, 3] = bad
    (root/"images"/"a1.png").unlink(); Image.fromarray(x).save(root/"images"/"a1.tif")
    before = _snapshot(root)
    with pytest.raises(DatasetError) as e: prepare_dataset(root, tmp_path/"out")
    assert e.value.problems == ["images/a1.tif: 1 non-finite pixel(s) (NaN or inf)"]
    with pytest.raises(DatasetError) as e: compute_stats(root, ["a0", "a1"])  # also when called on its own
    assert "images/a1.tif: non-finite pixels (NaN or inf) in a training image" in str(e.value)
    assert not (tmp_path/"out"/"manifest.json").exists() and _snapshot(root) == before


# 3. grey mask values and target-free frames are counted, not errors

def test_mask_counts(tmp_path, capsys):
    root = _tiny(tmp_path/"ds")
    m = np.zeros((20, 24), np.uint8); m[1, 1] = 1; m[2, 2] = 64; m[3, 3:5] = 255; _png(root/"masks"/"a2.png", m)
    _png(root/"masks"/"a0.png", np.zeros((20, 24), np.uint8)); _png(root/"masks"/"b1.png", np.zeros((20, 24), np.uint8))
    before = _snapshot(root)
    prepare_cli(str(root), out=str(tmp_path/"out"))
    man = json.loads((tmp_path/"out"/"manifest.json").read_text())
    assert man["mask_threshold"] == 0.5
    assert man["nonbinary_masks"] == {"masks/a2.png": [1, 64]}
    assert man["target_free"] == {"train": ["a0"], "test": ["b1"]}
    assert (man["train"], man["test"], man["skipped"]) == (["a0", "a1", "a2"], ["b0", "b1"], [])
    out = capsys.readouterr().out
    assert "validated 5 samples (5 usable, 0 skipped)" in out
    assert ("masks: a pixel is target when its value on the [0, 1] scale is > 0.5 (> 127 of 255); 1 mask(s) hold values "
            "other than 0 and 255; 2 frame(s) have no target (train 1, test 1)") in out
    assert "grey values 1, 64 in masks/a2.png" in out and "no target in train: a0" in out and "no target in test: b1" in out
    assert _snapshot(root) == before


# 4. SIRST v2 as released

V2 = dict(img_dir="mixed", msk_dir="annotations/masks", suffix="_pixels0")


def test_sirst_v2(tmp_path):
    root = _tiny(tmp_path/"sirst_v2", lists=("splits/trainval_full.txt", "splits/test_full.txt"), **V2)
    (root/"splits"/"trainval_v1.txt").write_text("a0\na1\n"); (root/"splits"/"test_v1.txt").write_text("b1\n")
    before = _snapshot(root)
    man = json.loads(prepare_dataset(root, tmp_path/"full").read_text())
    assert (man["layout"], man["split_files"], man["train"], man["test"]) == (
        "sirst_v2", {"train": "splits/trainval_full.txt", "test": "splits/test_full.txt"}, ["a0", "a1", "a2"], ["b0", "b1"])
    prepare_cli(str(root), out=str(tmp_path/"v1"), splits="trainval_v1,test_v1")
    man = json.loads((tmp_path/"v1"/"manifest.json").read_text())
    assert (man["split_files"], man["train"], man["test"]) == (
        {"train": "splits/trainval_v1.txt", "test": "splits/test_v1.txt"}, ["a0", "a1"], ["b1"])
    te = IRSTDDataset(tmp_path/"v1"/"manifest.json", "test")
    assert te.paths == [(root/"mixed"/"b1.png", root/"annotations"/"masks"/"b1_pixels0.png")]
    assert te[0]["mask"].sum() == 2
    assert _snapshot(root) == before


def test_sirst_v2_reads_recorded_lists(tmp_path):
    "The loader uses the split files the manifest recorded, even where the default lists do not exist."
    root = _tiny(tmp_path/"v2", lists=("splits/trainval_v1.txt", "splits/test_v1.txt"), **V2)
    before = _snapshot(root)
    with pytest.raises(DatasetError) as e: prepare_dataset(root, tmp_path/"out")
    assert "- sirst_v2: mixed/ annotations/masks/ splits/trainval_full.txt splits/test_full.txt (missing: splits/trainval_full.txt, splits/test_full.txt)" in str(e.value)
    p = prepare_dataset(root, tmp_path/"out", split_stems=("trainval_v1", "test_v1"))
    assert len(IRSTDDataset(p, "train", crop=16)) == 3 and IRSTDDataset(p, "train", crop=16)[0]["image"].shape == (1, 16, 16)
    assert _snapshot(root) == before


# 5. folder names matched case-insensitively

def test_folder_case(tmp_path, monkeypatch):
    root = _tiny(tmp_path/"data"/"IRSTD-1k", img_dir="IRSTD1k_Img", msk_dir="IRSTD1k_Label", lists=("trainval.txt", "test.txt"))
    before = _snapshot(root)
    monkeypatch.chdir(tmp_path)
    man = load_manifest(run_prepare(_cfg("data/IRSTD-1K"), "out"))
    assert (Path(man["root"]), man["layout"]) == (root.resolve(), "irstd1k")
    assert json.loads(Path("out/manifest.json").read_text())["root"] == "../data/IRSTD-1k"
    with pytest.raises(DatasetError) as e: run_prepare(_cfg("data/IRSTD1K"), "out2")
    msg = str(e.value)
    assert msg == (f"data.source='data/IRSTD1K' does not exist (cwd {tmp_path}; the closest existing folder is data/IRSTD-1k). "
                   "Put the dataset under data/<NAME> and set data.source in params.yaml (or pass SOURCE to dgspnet_prepare); "
                   "the default outputs/synthetic is written by the DVC synthetic stage.")
    with pytest.raises(DatasetError) as e: prepare_dataset(tmp_path/"Data"/"irstd-1x", tmp_path/"out3")
    assert str(e.value) == f"{tmp_path/'Data'/'irstd-1x'}: no such dataset folder; the closest existing folder is {tmp_path/'data'/'IRSTD-1k'}"
    assert not Path("out2").exists() and not Path("out3").exists() and _snapshot(root) == before


# 6. one prepare command

def test_params_file(tmp_path, monkeypatch):
    root = _tiny(tmp_path/"data"/"NUAA-SIRST"); (root/"masks"/"a1.png").unlink()
    other = _tiny(tmp_path/"other", train=("c0",), test=("c1",))
    before = _snapshot(tmp_path)
    (tmp_path/"params.yaml").write_text("data:\n  source: data/nuaa-sirst\n  skip_bad: true\n  resize_masks: false\n")
    monkeypatch.chdir(tmp_path)
    prepare_cli(out="out", params="params.yaml")  # source and skip_bad from the params file
    man = json.loads(Path("out/manifest.json").read_text())
    assert (man["root"], man["train"], [s["name"] for s in man["skipped"]]) == ("../data/NUAA-SIRST", ["a0", "a2"], ["a1"])
    prepare_cli(str(other), out="out2", params="params.yaml")  # SOURCE wins over data.source
    assert json.loads(Path("out2/manifest.json").read_text())["train"] == ["c0"]
    cfg = prepare_config(params="params.yaml", resize_masks=True)
    assert (cfg.data.source, cfg.data.skip_bad, cfg.data.resize_masks) == ("data/nuaa-sirst", True, True)
    assert _snapshot(tmp_path/"data") == {k[len("data/"):]: v for k, v in before.items() if k.startswith("data/")}


def test_cli_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    def error(*args, **kw):
        "The one stderr line of prepare_cli(*args, **kw), which must exit with status 2."
        with pytest.raises(SystemExit) as e: prepare_cli(*args, **kw)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1, err
        return err.rstrip("\n")
    (tmp_path/"p.yaml").write_text("data:\n  source: data/NUDT-SIRST\n")
    prefix = "dgspnet_prepare: error: "
    assert error(out="out", params="p.yaml").startswith(prefix + "data.source='data/NUDT-SIRST' does not exist")
    assert error(out="out") == prefix + "no dataset given: pass SOURCE, or --params FILE to take data.source from it"
    assert error("x") == prefix + "--out DIR is required: the folder where manifest.json is written"
    assert error(out="out", params="nope.yaml").startswith(prefix + "nope.yaml: params file not found;")
    (tmp_path/"bad.yaml").write_text("data:\n  sauce: x\n")
    assert "sauce" in error(out="out", params="bad.yaml")
    assert not (tmp_path/"out").exists()


def test_console_script_no_traceback(tmp_path):
    "The installed console script: exit status 2, the message on stderr, no traceback."
    script = Path(sys.executable).parent/"dgspnet_prepare"
    if not script.is_file(): pytest.skip(f"no console script at {script}")
    root = _tiny(tmp_path/"ds"); (root/"masks"/"b0.png").unlink()
    before = _snapshot(root)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, str(script), str(root), "--out", str(tmp_path/"out")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "masks/b0.png: no mask file for 'b0'" in r.stderr
    r = subprocess.run([sys.executable, str(script), str(root), "--out", str(tmp_path/"out"), "--skip_bad"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "validated 5 samples (4 usable, 1 skipped)" in r.stdout and "skipped test/b0" in r.stdout
    assert _snapshot(root) == before


# 7. normalize, unpadded test items, training items unchanged

def _golden_ds(root):
    "A small seeded dataset; GOLDEN holds the hashes of its training items (crop size / epoch / index) as recorded."
    rng = np.random.default_rng(7)
    names = {"train": ["t0", "t1", "t2"], "test": ["s0"]}
    for s, ns in names.items():
        for i, n in enumerate(ns):
            h, w = (40 + 7*i, 50 + 5*i)
            _png(root/"images"/f"{n}.png", rng.integers(0, 256, (h, w), dtype=np.uint8))
            m = np.zeros((h, w), np.uint8); m[h//2:h//2+3, w//3:w//3+2] = 255
            _png(root/"masks"/f"{n}.png", m)
        (root/f"{s}.txt").write_text("\n".join(ns) + "\n")
    return root

GOLDEN = {"32/0/0": "57092571df3a0fd5", "32/0/1": "f859b37e21c4c15c", "32/0/2": "b350bacfce2fe09b",
          "32/1/0": "4c501b3df91b640e", "32/1/1": "3d96fbe20ab19ca7", "32/1/2": "d2fa83b064adf1ec",
          "64/0/0": "d79b48399ed88f6d", "64/0/1": "dc2bda8cf6a41eec", "64/0/2": "ee55efeb0db82510",
          "64/1/0": "92395164bb0cfa77", "64/1/1": "c01e0577ffaf99ad", "64/1/2": "e1b590fabfdd651c"}


def test_training_items_unchanged(tmp_path):
    root = _golden_ds(tmp_path/"ds"); before = _snapshot(root)
    man = prepare_dataset(root, tmp_path/"out")
    got = {}
    for crop in (32, 64):
        ds = IRSTDDataset(man, "train", crop=crop, seed=3)
        for ep in (0, 1):
            ds.set_epoch(ep)
            for i in range(len(ds)):
                it = ds[i]
                got[f"{crop}/{ep}/{i}"] = hashlib.sha1(it["image"].numpy().tobytes() + it["mask"].numpy().tobytes()).hexdigest()[:16]
    assert got == GOLDEN and _snapshot(root) == before


def test_normalize_and_unpadded_test_items(tmp_path):
    root = _golden_ds(tmp_path/"ds"); before = _snapshot(root)
    man = prepare_dataset(root, tmp_path/"out"); st = load_manifest(man)["stats"]
    x = read_image(root/"images"/"s0.png")
    y = normalize(x, st)
    assert y.dtype == np.float32 and np.array_equal(y, ((x - st["mean"]) / st["std"]).astype(np.float32))
    it = IRSTDDataset(man, "test")[0]
    assert it["size"] == (40, 50) and it["image"].shape == it["mask"].shape == (1, 40, 50)
    assert torch.equal(it["image"][0], torch.from_numpy(y)) and it["mask"].sum() == 6
    assert _snapshot(root) == before
