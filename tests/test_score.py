"""dgspnet_score as a user meets it: hand-built predictions whose metrics are known, and every problem one line
naming its file."""
import csv, json, sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dgspnet.cli import score_cli
from dgspnet.data import IRSTDDataset, prepare_dataset
from dgspnet.synthetic import make_synthetic_dataset
from cli_run import run_cli

N_TEST, SIZE = 5, 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    "A tiny synthetic dataset, its manifest, and the test split's (name, bool mask) pairs."
    d = tmp_path_factory.mktemp("score")
    make_synthetic_dataset(d/"ds", n_train=4, n_test=N_TEST, size=SIZE, seed=0)
    manifest = prepare_dataset(d/"ds", d/"prep")
    ds = IRSTDDataset(manifest, "test", train=False)
    return d, manifest, [(n, ds.load(i)[1]) for i, n in enumerate(ds.names)]


def write(folder, masks, kind="png8"):
    "Save {name: (H,W) float in [0,1]} as 8-bit PNG, 16-bit PNG or .npy; returns the folder."
    folder.mkdir(parents=True, exist_ok=True)
    for n, m in masks.items():
        scaled = lambda top, dtype: (np.asarray(m, float) * top).round().astype(dtype)
        if kind == "png8": Image.fromarray(scaled(255, np.uint8)).save(folder/f"{n}.png")
        elif kind == "png16": Image.fromarray(scaled(65535, np.uint16)).save(folder/f"{n}.png")
        else: np.save(folder/f"{n}.npy", np.asarray(m, np.float32))
    return folder


def run(argv, monkeypatch, capsys):
    "score_cli in-process; returns (exit status, stdout, stderr)."
    return run_cli(score_cli, "dgspnet_score", argv, monkeypatch, capsys)


def metrics(out): return json.loads((Path(out)/"metrics.json").read_text())


def free_spot(gt, k, margin=6):
    "(row, col) where a 1 x k blob lies at least `margin` px from every target pixel."
    for r in range(margin, gt.shape[0] - margin):
        for c in range(margin, gt.shape[1] - margin - k):
            if not gt[r - margin:r + margin + 1, c - margin:c + k + margin].any(): return r, c
    raise AssertionError("no free spot in this synthetic image")


@pytest.mark.parametrize("kind", ["png8", "png16", "npy"])
def test_perfect(data, tmp_path, monkeypatch, capsys, kind):
    d, manifest, gts = data
    pred = write(tmp_path/"pred", {n: g for n, g in gts}, kind)
    code, out, err = run([pred, manifest, "--out", tmp_path/"out", "--curve_points", 3], monkeypatch, capsys)
    m = metrics(tmp_path/"out")
    assert code == 0 and err == "" and json.loads(out)["IoU_pct"] == 100.0
    assert (m["IoU_pct"], m["nIoU_pct"], m["Pd_pct"], m["Fa_1e-6"], m["Fa_targets_per_image"]) == (100, 100, 100, 0, 0)
    assert (m["n_scored"], m["n_split"], m["split"], m["problems"]) == (N_TEST, N_TEST, "test", [])
    assert set(m["fa_definitions"]) == {"Fa_1e-6", "Fa_targets_per_image"}


def test_empty_prediction(data, tmp_path, monkeypatch, capsys):
    d, manifest, gts = data
    pred = write(tmp_path/"pred", {n: np.zeros_like(g, float) for n, g in gts})
    code, _, _ = run([pred, d/"ds", "--out", tmp_path/"out"], monkeypatch, capsys)  # the dataset folder itself
    m = metrics(tmp_path/"out")
    assert code == 0 and (m["IoU_pct"], m["Pd_pct"], m["Fa_1e-6"], m["Fa_targets_per_image"]) == (0, 0, 0, 0)
    assert m["n_targets"] > 0


def test_one_false_blob(data, tmp_path, monkeypatch, capsys):
    d, manifest, gts = data
    k = 3
    masks = {n: g.astype(float) for n, g in gts}
    name, gt = gts[0]
    r, c = free_spot(gt, k)
    masks[name][r, c:c + k] = 1
    pred = write(tmp_path/"pred", masks)
    code, _, _ = run([pred, manifest, "--out", tmp_path/"out"], monkeypatch, capsys)
    m = metrics(tmp_path/"out")
    assert code == 0 and m["Pd_pct"] == 100.0
    assert m["Fa_1e-6"] == round(k / (N_TEST * SIZE * SIZE) * 1e6, 2)
    assert m["Fa_targets_per_image"] == round(1 / N_TEST, 4)
    rows = {r["name"]: r for r in csv.DictReader(open(tmp_path/"out"/"per_image.csv"))}
    assert (rows[name]["false_targets"], rows[name]["fa_pixels"]) == ("1", str(k))
    curve = list(csv.DictReader(open(tmp_path/"out"/"pdfa.csv")))
    assert list(curve[0]) == ["threshold", "Pd_pct", "Fa_1e-6", "Fa_targets_per_image"]
    assert all(float(r["Fa_targets_per_image"]) == 1 / N_TEST for r in curve)  # a 0/255 mask: same at every threshold


def test_probability_threshold(data, tmp_path, monkeypatch, capsys):
    "A probability map of 0.7 on every target: a target above --threshold 0.5, nothing above 0.8."
    d, manifest, gts = data
    pred = write(tmp_path/"pred", {n: 0.7 * g for n, g in gts}, "npy")
    assert run([pred, manifest, "--out", tmp_path/"a"], monkeypatch, capsys)[0] == 0
    assert run([pred, manifest, "--out", tmp_path/"b", "--threshold", 0.8], monkeypatch, capsys)[0] == 0
    assert metrics(tmp_path/"a")["Pd_pct"] == 100.0 and metrics(tmp_path/"b")["Pd_pct"] == 0.0


def test_problems(data, tmp_path, monkeypatch, capsys):
    "Missing, extra, doubled, wrong-size and unreadable predictions: one line each naming the file; the rest is scored."
    d, manifest, gts = data
    masks = {n: g.astype(float) for n, g in gts[1:]}  # the first is missing
    masks[gts[1][0]] = np.zeros((SIZE + 1, SIZE))  # wrong size
    masks["not_in_split"] = np.zeros((SIZE, SIZE))  # extra
    pred = write(tmp_path/"pred", masks)
    np.save(pred/f"{gts[2][0]}.npy", np.zeros((SIZE, SIZE)))  # doubled stem
    np.save(tmp_path/"logits.npy", np.full((SIZE, SIZE), 4.0))
    (pred/f"{gts[3][0]}.png").unlink()
    (tmp_path/"logits.npy").rename(pred/f"{gts[3][0]}.npy")  # unreadable: logits, not probabilities
    code, out, err = run([pred, manifest, "--out", tmp_path/"out"], monkeypatch, capsys)
    lines = err.splitlines()
    assert code == 1 and len(lines) == 5 and all(l.startswith("dgspnet_score: ") for l in lines), err
    expect = [(pred/f"{gts[0][0]}.png", "missing"), (pred/"not_in_split.png", "extra"),
              (pred/f"{gts[2][0]}.npy", "doubled"), (pred/f"{gts[1][0]}.png", "wrong size"),
              (pred/f"{gts[3][0]}.npy", "unreadable")]
    for (path, what), line in zip(sorted(expect, key=lambda e: e[1]), sorted(lines, key=lambda l: l.split(": ")[2])):
        assert str(path) in line and what in line, (path, what, line)
    m = metrics(tmp_path/"out")
    assert (m["n_scored"], m["n_split"], len(m["problems"]), m["Pd_pct"]) == (N_TEST - 4, N_TEST, 5, 100.0)


def test_nothing_to_score(data, tmp_path, monkeypatch, capsys):
    d, manifest, gts = data
    pred = write(tmp_path/"pred", {n: np.zeros((SIZE, SIZE + 2)) for n, _ in gts})
    code, out, err = run([pred, manifest, "--out", tmp_path/"out"], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("dgspnet_score: error: ") and "nothing to score" in err
    assert "wrong size" in err and not (tmp_path/"out"/"metrics.json").exists()
    code, _, err = run([tmp_path/"nope", manifest], monkeypatch, capsys)
    assert code == 2 and "no such folder" in err and str(tmp_path/"nope") in err


TINY = {"base": {"device": "cpu", "threads": 1}, "data": {"crop": 32},
        "model": {"widths": [4, 8, 16, 32, 64], "clip_weights": "none"},
        "evaluate": {"curve_points": 3, "gallery": 1, "attention_images": 1}}


def test_one_model_one_answer(tmp_path, monkeypatch, capsys):
    """A model whose training statistics are set A's, scored on set B (other seed and size: other statistics) through
    dgspnet_evaluate and through dgspnet_predict + dgspnet_score: the same probabilities and the same metrics."""
    from dgspnet.checkpoint import build_model, load_trained, save_trained
    from dgspnet.config import EvaluateCfg, config_from_dict
    from dgspnet.data import load_manifest
    from dgspnet.evaluate import evaluate
    from dgspnet.inference import normalization_stats, predict_split
    from dgspnet.predict import predict_frames
    make_synthetic_dataset(tmp_path/"A", n_train=4, n_test=2, size=32, seed=0)
    make_synthetic_dataset(tmp_path/"B", n_train=6, n_test=3, size=48, seed=3)
    (tmp_path/"B"/"scenes.csv").unlink()  # dgspnet_predict has no scene word for a frame: neither has B
    a, b = (load_manifest(prepare_dataset(tmp_path/s, tmp_path/f"prep{s}"))["stats"] for s in "AB")
    assert abs(a["mean"] - b["mean"]) > 1e-3
    cfg = config_from_dict(TINY)
    save_trained(build_model(cfg), cfg, a, tmp_path/"model.pt")
    ds = IRSTDDataset(tmp_path/"prepB"/"manifest.json", "test", train=False)
    ds.stats = normalization_stats("model", a, b)
    net = load_trained(tmp_path/"model.pt").net
    probs = {item["name"]: p for item, p in predict_split(net, ds)}
    threshold = float(np.median(np.concatenate([p.ravel() for p in probs.values()])))  # some pixels on, some off
    m = evaluate(tmp_path/"model.pt", tmp_path/"prepB"/"manifest.json", tmp_path/"ev", EvaluateCfg(threshold, 3, 1, 1),
                 progress=False)
    details = json.loads((tmp_path/"ev"/"details.json").read_text())
    assert details["normalization"] == dict(rule="model", **a)
    frames = [tmp_path/"B"/"images"/f"{n}.png" for n in ds.names]
    res = predict_frames(tmp_path/"model.pt", frames, tmp_path/"pred", threshold)
    assert all(r["status"] == "ok" for r in res["frames"])
    for n, p in probs.items():
        stored = np.asarray(Image.open(tmp_path/"pred"/f"{n}_png_prob.png"), float) / 255
        assert np.abs(stored - p).max() <= 0.5 / 255 + 1e-6  # predict's 8-bit probability map is evaluate's
    capsys.readouterr()  # predict's progress lines
    argv = [tmp_path/"pred", tmp_path/"prepB"/"manifest.json", "--out", tmp_path/"sc", "--suffix", "_png_mask"]
    code, _, err = run(argv, monkeypatch, capsys)
    assert err == ""  # predict's other files (_prob, _overlay, CSVs) are not predictions under this suffix
    s = metrics(tmp_path/"sc")
    assert code == 0 and 0 < s["IoU_pct"] < 100
    for k in ("IoU_pct", "nIoU_pct", "Pd_pct", "Fa_1e-6"):
        assert abs(s[k] - m[k]) < 0.01 or (np.isnan(s[k]) and np.isnan(m[k])), (k, s[k], m[k])
    m_dataset = evaluate(tmp_path/"model.pt", tmp_path/"prepB"/"manifest.json", tmp_path/"ev2",
                         EvaluateCfg(threshold, 3, 1, 1), progress=False, normalization="dataset")
    assert json.loads((tmp_path/"ev2"/"details.json").read_text())["normalization"] == dict(rule="dataset", **b)
    assert m_dataset != m  # the other statistics give another answer: the rule matters here



def test_evaluate_wrong_normalization(data, tmp_path, monkeypatch, capsys):
    from dgspnet.cli import evaluate_cli
    d, manifest, gts = data
    monkeypatch.setattr(sys, "argv", ["dgspnet_evaluate", "--checkpoint", str(tmp_path/"none.pt"), "--manifest",
                                      str(manifest), "--normalization", "train"])
    with pytest.raises(SystemExit) as e: evaluate_cli()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "--normalization 'train'" in err, err


def test_evaluate_equals_score_of_predict_npy(tmp_path, monkeypatch, capsys):
    """One model, one answer, exactly: a tiny trained DGSPNet's test split scored by dgspnet_evaluate, and predicted by
    dgspnet_predict --save_prob npy then scored by dgspnet_score: the same four metrics to the last digit, the same
    false targets per image, and predict's .npy maps are evaluate's probabilities bit for bit."""
    import torch
    from dgspnet.checkpoint import build_model, load_trained, save_trained
    from dgspnet.cli import predict_cli
    from dgspnet.config import EvaluateCfg, config_from_dict
    from dgspnet.data import load_manifest
    from dgspnet.evaluate import evaluate
    from dgspnet.inference import predict_split, prepare_for_inference
    from dgspnet.losses import SegmentationLoss
    from dgspnet.score import image_counts
    make_synthetic_dataset(tmp_path/"ds", n_train=8, n_test=4, size=64, seed=5)
    (tmp_path/"ds"/"scenes.csv").unlink()  # dgspnet_predict has no scene word for a frame: neither has the split
    manifest = prepare_dataset(tmp_path/"ds", tmp_path/"prep")
    train = IRSTDDataset(manifest, "train", train=False)
    x = torch.stack([train[i]["image"] for i in range(len(train))])
    y = torch.stack([train[i]["mask"] for i in range(len(train))])
    torch.manual_seed(0)
    cfg = config_from_dict(TINY)
    net = build_model(cfg).freeze_inversion().train()
    opt, loss_fn = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=3e-3), SegmentationLoss()
    for _ in range(30):  # a few full-batch steps: the model finds some targets and some false alarms
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_trained(net.eval(), cfg, load_manifest(manifest)["stats"], tmp_path/"model.pt")
    test = IRSTDDataset(manifest, "test", train=False)
    probs, gts = {}, {}
    for item, p in predict_split(prepare_for_inference(load_trained(tmp_path/"model.pt").net), test):  # as evaluate runs
        probs[item["name"]], gts[item["name"]] = p, item["mask"][0, :p.shape[0], :p.shape[1]].numpy() > 0.5
    # a cut between the brightest pixels (this briefly trained model's probabilities are low): some targets found,
    # some false alarms; any cut, not only 0.5, gives the same answer both ways
    threshold = float(np.quantile(np.concatenate([p.ravel() for p in probs.values()]), 0.995))
    m = evaluate(tmp_path/"model.pt", manifest, tmp_path/"ev", EvaluateCfg(threshold, 3, 1, 1), progress=False)
    frames = sorted((tmp_path/"ds"/"images").glob("*.png"))
    before = {f: f.read_bytes() for f in (tmp_path/"ds").rglob("*") if f.is_file()}
    code, _, _ = run_cli(predict_cli, "dgspnet_predict", [tmp_path/"model.pt", *[f for f in frames if f.stem in probs],
                         tmp_path/"pred", "--save_prob", "npy", "--threshold", threshold], monkeypatch, capsys)
    assert code == 0
    assert {f: f.read_bytes() for f in (tmp_path/"ds").rglob("*") if f.is_file()} == before  # inputs untouched
    assert sorted(p.name for p in (tmp_path/"pred").glob("*_prob.*")) == sorted(f"{n}_png_prob.npy" for n in probs)
    for n, p in probs.items():
        stored = np.load(tmp_path/"pred"/f"{n}_png_prob.npy")
        assert stored.dtype == np.float32 and np.array_equal(stored, p), n  # evaluate's probabilities, bit for bit
    code, _, err = run([tmp_path/"pred", manifest, "--out", tmp_path/"sc", "--suffix", "_png_prob",
                        "--threshold", threshold], monkeypatch, capsys)
    s = metrics(tmp_path/"sc")
    assert code == 0 and err == "" and s["n_scored"] == len(probs) == 4
    assert 0 < m["IoU_pct"] < 100 and m["Fa_1e-6"] > 0, m  # a model that finds targets, and not only targets
    for k in ("IoU_pct", "nIoU_pct", "Pd_pct", "Fa_1e-6"):
        assert s[k] == m[k], (k, s[k], m[k])
    false_targets = sum(image_counts(probs[n], gts[n], threshold)["false_targets"] for n in probs)
    assert s["Fa_targets_per_image"] == round(false_targets / len(probs), 4)
