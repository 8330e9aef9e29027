"""Combined datasets (SIRST3, `dgspnet.combine`): three tiny datasets in three layouts combined, read back, prepared
and evaluated per source; the errors a user can cause; the three real benchmarks combined (skipped, with the reason,
where ../shared/datasets is absent; set DGSPNET_DATASETS to its folder)."""
import csv, hashlib, json, os, shutil, subprocess, sys
from pathlib import Path

import pytest
import torch

from dgspnet.combine import combine_datasets
from dgspnet.data import DatasetError, detect_layout, load_split_names, prepare_dataset, read_sources, resolve_layout
from dgspnet.synthetic import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATASETS = Path(os.environ.get("DGSPNET_DATASETS", ROOT.parent / "shared" / "datasets"))
LAYOUTS = {  # layout -> image folder, mask folder, (train list, test list), mask suffix
    "plain": ("images", "masks", ("train.txt", "test.txt"), ""),
    "irstd1k": ("IRSTD1k_Img", "IRSTD1k_Label", ("trainval.txt", "test.txt"), ""),
    "sirst_v1": ("images", "masks", ("idx_427/trainval.txt", "idx_427/test.txt"), "_pixels0"),
}


def in_layout(dst: Path, layout: str, prefix: str, n_train=3, n_test=3, seed=0) -> Path:
    "A synthetic dataset written in `layout`, its samples named `<prefix>_<name>` (scene words for `plain`)."
    syn = make_synthetic_dataset(dst.parent / f".syn_{dst.name}", n_train, n_test, size=32, seed=seed)
    img, msk, lists, suffix = LAYOUTS[layout]
    for d in (img, msk, Path(lists[0]).parent):
        (dst / d).mkdir(parents=True, exist_ok=True)
    for s, lst in zip(("train", "test"), lists):
        names = load_split_names(syn, s)
        (dst / lst).write_text("".join(f"{prefix}_{n}\n" for n in names))
        for n in names:
            shutil.copy(syn / "images" / f"{n}.png", dst / img / f"{prefix}_{n}.png")
            shutil.copy(syn / "masks" / f"{n}.png", dst / msk / f"{prefix}_{n}{suffix}.png")
    if layout == "plain":
        rows = (syn / "scenes.csv").read_text().splitlines()[1:]
        (dst / "scenes.csv").write_text("".join(f"{prefix}_{r}\n" for r in rows))
    shutil.rmtree(syn)
    return dst


def tree_hash(root: Path) -> dict:
    "Every file under `root` (links followed) with its bytes' hash and mtime."
    return {p.relative_to(root).as_posix(): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def three(tmp_path):
    "Three tiny datasets, each in another layout: plain (with scenes), irstd1k, sirst_v1 (mask suffix _pixels0)."
    srcs = [in_layout(tmp_path / "src" / "NUAA-LIKE", "plain", "Misc", seed=1),
            in_layout(tmp_path / "src" / "IRSTD-LIKE", "irstd1k", "XDU", seed=2),
            in_layout(tmp_path / "src" / "V1-LIKE", "sirst_v1", "v1", seed=3)]
    return srcs, {p: tree_hash(p) for p in srcs}


def test_combine_symlinks_read_back_and_prepared(three, tmp_path):
    srcs, before = three
    out = tmp_path / "data" / "SIRST3"
    s = combine_datasets(srcs, out)
    assert [detect_layout(p) for p in srcs] == ["plain", "irstd1k", "sirst_v1"]
    assert detect_layout(out) == "basicirstd"
    assert resolve_layout(out).split_files == {"train": out / "img_idx/train_SIRST3.txt",
                                               "test": out / "img_idx/test_SIRST3.txt"}
    for split in ("train", "test"):
        want = [n for p in srcs for n in load_split_names(p, split)]
        assert load_split_names(out, split) == want and len(want) == 9
    assert sorted(p.name for p in (out / "img_idx").iterdir()) == [
        "test_IRSTD-LIKE.txt", "test_NUAA-LIKE.txt", "test_SIRST3.txt", "test_V1-LIKE.txt", "train_SIRST3.txt"]
    for p in srcs:
        assert (out / "img_idx" / f"test_{p.name}.txt").read_text().split() == load_split_names(p, "test")
    with open(out / "sources.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["name", "source"] and len(rows) == 19
    assert dict(rows[1:]) == {n: p.name for p in srcs for sp in ("train", "test") for n in load_split_names(p, sp)}
    assert read_sources(out / "sources.csv") == dict(rows[1:])
    # symlinks with absolute targets; the sirst_v1 mask without its suffix
    link = out / "masks" / "v1_test_0000.png"
    assert link.is_symlink() and os.readlink(link) == str(srcs[2] / "masks" / "v1_test_0000_pixels0.png")
    assert os.readlink(out / "images" / "XDU_train_0001.png") == str(srcs[1] / "IRSTD1k_Img" / "XDU_train_0001.png")
    assert s == json.loads((out / "sources.json").read_text())
    assert (s["train"], s["test"]) == (9, 9)
    assert {k: (v["layout"], v["train"], v["test"]) for k, v in s["sources"].items()} == {
        "NUAA-LIKE": ("plain", 3, 3), "IRSTD-LIKE": ("irstd1k", 3, 3), "V1-LIKE": ("sirst_v1", 3, 3)}
    man = json.loads(prepare_dataset(out, tmp_path / "prep").read_text())
    assert man["layout"] == "basicirstd" and len(man["train"]) == len(man["test"]) == 9
    assert man["sources"] == dict(rows[1:])
    assert len(man["scenes"]) == 6 and all(n.startswith("Misc_") for n in man["scenes"])  # the plain source's
    assert {p: tree_hash(p) for p in srcs} == before  # the sources are untouched


def test_copy_mode(three, tmp_path):
    srcs, before = three
    out = tmp_path / "copied"
    assert combine_datasets(srcs, out, name="ALL", copy=True)["copy"] is True
    files = [p for p in (out / "images").iterdir()] + [p for p in (out / "masks").iterdir()]
    assert len(files) == 36 and not any(p.is_symlink() for p in files)
    assert (out / "masks" / "v1_train_0002.png").read_bytes() == \
        (srcs[2] / "masks" / "v1_train_0002_pixels0.png").read_bytes()
    assert resolve_layout(out).split_files["train"].name == "train_ALL.txt"
    json.loads(prepare_dataset(out, tmp_path / "prep").read_text())
    assert {p: tree_hash(p) for p in srcs} == before


def test_rerun_and_what_is_refused(three, tmp_path):
    srcs, before = three
    out = tmp_path / "SIRST3"
    combine_datasets(srcs, out)
    combine_datasets(srcs[::-1], out)  # the same sources again, in another order: written again
    assert load_split_names(out, "test")[0] == "v1_test_0000"
    (out / "masks" / "mine.txt").write_text("keep me")
    with pytest.raises(DatasetError, match=f"{out}: not empty and not a combination of these sources"):
        combine_datasets(srcs, out)
    assert (out / "masks" / "mine.txt").read_text() == "keep me"
    (out / "masks" / "mine.txt").unlink()
    with pytest.raises(DatasetError, match="not empty and not a combination"):
        combine_datasets(srcs[:2], out)  # other sources
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(DatasetError, match="not empty and not a combination"):
        combine_datasets(srcs, tmp_path / "notes")
    assert (tmp_path / "notes" / "a.txt").read_text() == "x"
    assert {p: tree_hash(p) for p in srcs} == before


def test_errors_name_the_files(three, tmp_path):
    srcs, before = three
    clash = in_layout(tmp_path / "other" / "CLASH", "irstd1k", "Misc", seed=4)  # Misc_* names, like NUAA-LIKE
    with pytest.raises(DatasetError) as e:
        combine_datasets(srcs + [clash], tmp_path / "out")
    assert str(e.value).startswith("6 sample name(s) in two sources: ")
    assert f"{srcs[0]}/images/Misc_train_0000.png and {clash}/IRSTD1k_Img/Misc_train_0000.png" in str(e.value)
    twin = in_layout(tmp_path / "other" / "NUAA-LIKE", "plain", "twin")
    with pytest.raises(DatasetError, match=f"{srcs[0]} and {twin}: two sources named NUAA-LIKE"):
        combine_datasets(srcs + [twin], tmp_path / "out")
    with pytest.raises(DatasetError, match="a source named like the combination"):
        combine_datasets(srcs, tmp_path / "out", name="IRSTD-LIKE")
    with pytest.raises(DatasetError, match=f"{srcs[1]}/out: inside the source {srcs[1]}"):
        combine_datasets(srcs, srcs[1] / "out")
    with pytest.raises(DatasetError, match=f"holds the source {srcs[0]}"):
        combine_datasets(srcs, tmp_path / "src")
    bare = tmp_path / "bare"
    (bare / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match=f"{bare}: not a known IRSTD dataset layout"):
        combine_datasets(srcs + [bare], tmp_path / "out")
    (srcs[2] / "images" / "v1_test_0001.png").rename(tmp_path / "moved.png")
    with pytest.raises(DatasetError, match=f"1 listed file\\(s\\) missing: {srcs[2]}/images/v1_test_0001.png"):
        combine_datasets(srcs, tmp_path / "out")
    (tmp_path / "moved.png").rename(srcs[2] / "images" / "v1_test_0001.png")
    assert not (tmp_path / "out").exists()  # nothing written by a refused combination
    assert {p: tree_hash(p) for p in srcs} == before


def test_cli(three, tmp_path):
    srcs, _ = three
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([str(BIN / "dgspnet_combine"), *map(str, srcs), "--out", str(tmp_path / "S3")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split() == ["source", "layout", "train", "test"]
    assert r.stdout.splitlines()[2].split() == ["IRSTD-LIKE", "irstd1k", "3", "3"]
    assert r.stdout.splitlines()[4].split() == ["SIRST3", "(all)", "basicirstd", "9", "9"]
    r = subprocess.run([str(BIN / "dgspnet_combine"), str(srcs[0]), str(srcs[0]), "--out", str(tmp_path / "S4")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr == f"dgspnet_combine: error: {srcs[0]}: given twice; name each source once\n"


def test_evaluate_per_source_equals_each_source(three, tmp_path):
    "Each by_source entry of the combined evaluation is the evaluation of that source's own dataset, exactly."
    from dgspnet.checkpoint import build_model, save_trained
    from dgspnet.config import config_from_dict
    from dgspnet.evaluate import evaluate
    srcs, _ = three
    combine_datasets(srcs, tmp_path / "S3")
    man = prepare_dataset(tmp_path / "S3", tmp_path / "prep")
    own_man = {p.name: prepare_dataset(p, tmp_path / f"prep_{p.name}") for p in srcs}
    cfg = config_from_dict({"model": {"widths": [4, 8, 16, 32, 64], "clip_weights": "none"},
                            "evaluate": {"threshold": 0.5, "curve_points": 3, "gallery": 1, "attention_images": 1}})
    keys, seen = ("IoU_pct", "nIoU_pct", "Pd_pct", "Fa_1e-6"), {}
    # an untrained head predicts 0.5 +- 0.0005: "spread" scales it so that a few pixels are above 0.5 (false alarms
    # that differ by source), "all" predicts every pixel (IoU and nIoU: each source's share of target pixels)
    for kind, scale, bias in (("spread", 3000.0, -1.0), ("all", 0.0, 30.0)):
        torch.manual_seed(0)
        net = build_model(cfg)
        with torch.no_grad():
            net.head.weight.mul_(scale)
            net.head.bias.fill_(bias)
        save_trained(net, cfg, {"mean": 0.3, "std": 0.1}, tmp_path / f"{kind}.pt")
        m = evaluate(tmp_path / f"{kind}.pt", man, tmp_path / f"ev_{kind}", progress=False)
        assert list(m["by_source"]) == [p.name for p in srcs]
        for p in srcs:
            own = evaluate(tmp_path / f"{kind}.pt", own_man[p.name], tmp_path / f"ev_{kind}_{p.name}", progress=False)
            assert "by_source" not in own
            assert {k: m["by_source"][p.name][k] for k in keys} == {k: own[k] for k in keys}, (kind, p.name)
            assert m["by_source"][p.name]["n_images"] == 3
        seen[kind] = m
    # the combined folder with one source's test list (data.splits: [train_SIRST3, test_V1-LIKE]): a single dataset
    one = prepare_dataset(tmp_path / "S3", tmp_path / "prep_one", split_stems=("train_SIRST3", "test_V1-LIKE"))
    m = evaluate(tmp_path / "all.pt", one, tmp_path / "ev_one", progress=False)
    assert "by_source" not in m and {k: m[k] for k in keys} == {k: seen["all"]["by_source"]["V1-LIKE"][k] for k in keys}
    with open(tmp_path / "ev_one" / "per_image.csv", newline="") as f:
        assert next(csv.reader(f)) == ["name", "IoU_pct"]
    assert len({seen["spread"]["by_source"][p.name]["Fa_1e-6"] for p in srcs}) == 3  # the sources differ:
    assert len({seen["all"]["by_source"][p.name]["IoU_pct"] for p in srcs}) == 3  # a check that can fail
    assert len({seen["all"]["by_source"][p.name]["nIoU_pct"] for p in srcs}) == 3
    ev = tmp_path / "ev_all"
    assert json.loads((ev / "metrics.json").read_text()) == seen["all"]
    details = json.loads((ev / "details.json").read_text())
    assert details["sources"] == {n: p.name for p in srcs for n in load_split_names(p, "test")}
    with open(ev / "per_image.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["name", "IoU_pct", "source"] and [r[2] for r in rows[1:]] == [p.name for p in srcs for _ in "abc"]
    with open(tmp_path / "ev_all_V1-LIKE" / "per_image.csv", newline="") as f:
        assert next(csv.reader(f)) == ["name", "IoU_pct"]  # a single dataset: as before
    assert "sources" not in json.loads((tmp_path / "ev_all_V1-LIKE" / "details.json").read_text())


def test_preset():
    "paper-sirst3 is the paper's setting of paper-nuaa-sirst (resize_masks for Misc_111 included) on data/SIRST3."
    from dgspnet.experiments import load_presets, preset_descriptions
    presets = load_presets(ROOT / "configs" / "experiments.yaml")
    sirst3, nuaa = dict(presets["paper-sirst3"]), dict(presets["paper-nuaa-sirst"])
    assert sirst3.pop("data.source") == "data/SIRST3" and nuaa.pop("data.source") == "data/NUAA-SIRST"
    assert sirst3 == nuaa and sirst3["data.resize_masks"] is True
    assert preset_descriptions(ROOT / "configs" / "experiments.yaml")["paper-sirst3"].startswith("SIRST3: ")
    text = (ROOT / "configs" / "experiments.yaml").read_text()
    assert "dgspnet_combine data/NUAA-SIRST data/NUDT-SIRST data/IRSTD-1K --out data/SIRST3" in text


def test_real_sirst3(tmp_path):
    "The three published benchmarks combined: 213 + 663 + 800 train, 214 + 664 + 201 test, their own lists."
    names = ("NUAA-SIRST", "NUDT-SIRST", "IRSTD-1K")
    missing = [n for n in names if not (DATASETS / n).is_dir()]
    if missing:
        pytest.skip(f"real datasets {missing} not found under {DATASETS} (set DGSPNET_DATASETS to their folder)")
    before = {n: sorted(os.listdir(DATASETS / n)) for n in names}
    s = combine_datasets([DATASETS / n for n in names], tmp_path / "SIRST3")
    assert {n: (v["train"], v["test"]) for n, v in s["sources"].items()} == {
        "NUAA-SIRST": (213, 214), "NUDT-SIRST": (663, 664), "IRSTD-1K": (800, 201)}
    assert (s["train"], s["test"]) == (1676, 1079)
    for split in ("train", "test"):
        want = [n for d in names for n in load_split_names(DATASETS / d, split)]
        got = load_split_names(tmp_path / "SIRST3", split)
        assert got == want and len(set(got)) == len(got)
    # the whole folder validated as dgspnet_prepare does (about 25 s on 2 CPU cores)
    man = json.loads(prepare_dataset(tmp_path / "SIRST3", tmp_path / "prep", resize_masks=True).read_text())
    assert (len(man["train"]), len(man["test"]), man["skipped"]) == (1676, 1079, [])
    assert man["resized_masks"] == ["Misc_111"]
    counts = {n: sum(v == n for v in man["sources"].values()) for n in names}
    assert counts == {"NUAA-SIRST": 427, "NUDT-SIRST": 1327, "IRSTD-1K": 1001}
    assert {n: sorted(os.listdir(DATASETS / n)) for n in names} == before
