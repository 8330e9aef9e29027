"""dgspnet_predict as a user meets it: every case in a temporary folder, the message checked, the input tree unchanged."""
import csv, hashlib, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from dgspnet.config import config_from_dict
from dgspnet.checkpoint import build_model, save_trained, load_trained
from dgspnet.cli import predict_cli
from dgspnet.predict import predict_frames, run_predict, OUTPUT_KINDS
from cli_run import run_cli

ROOT = Path(__file__).resolve().parents[1]
TINY = {"model": {"widths": [4, 8, 16, 32, 64], "clip_weights": "none"}}


def tree_hash(root) -> str:
    "Hash of every file's relative path and bytes under `root` (files only)."
    h = hashlib.sha256()
    for p in sorted(Path(root).rglob("*")):
        if p.is_file(): h.update(str(p.relative_to(root)).encode()); h.update(p.read_bytes())
    return h.hexdigest()


def run(argv, monkeypatch, capsys):
    "predict_cli in-process; returns (exit status, stdout, stderr)."
    return run_cli(predict_cli, "dgspnet_predict", argv, monkeypatch, capsys)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    "A tiny untrained model.pt whose head bias makes every pixel a target (one detection per frame)."
    d = tmp_path_factory.mktemp("model")
    cfg = config_from_dict(TINY)
    net = build_model(cfg)
    with torch.no_grad(): net.head.weight.zero_(); net.head.bias.fill_(5.0)
    save_trained(net, cfg, {"mean": 0.3, "std": 0.1}, d/"model.pt")
    torch.save(dict(state=net.encoder_state_dict(), fingerprint="f", config=cfg.to_dict()), d/"encoder.pt")
    ck = torch.load(d/"model.pt", weights_only=True); ck["config"]["model"]["widths"] = [8, 16, 32, 64, 128]
    torch.save(ck, d/"misfit.pt")
    ck["config"]["model"]["widths"] = TINY["model"]["widths"]; ck["config"]["model"]["clip_weights"] = str(d/"no_clip.pt")
    torch.save(ck, d/"needs_clip.pt")
    (d/"notes.pt").write_text("not a checkpoint")
    return d


@pytest.fixture
def frames(tmp_path):
    "A user's folder: same-stem a.png + a.bmp, the user's own scene_mask.png, a corrupt frame, a blank frame."
    f = tmp_path/"frames"
    f.mkdir()
    img = (np.random.default_rng(0).random((40, 50)) * 255).astype(np.uint8)
    Image.fromarray(img).save(f/"a.png"); Image.fromarray(img[::-1]).save(f/"a.bmp")
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(f/"scene_mask.png")
    (f/"corrupt.png").write_bytes(b"\x89PNG not really")
    Image.fromarray(np.zeros((33, 31), np.uint8)).save(f/"blank.png")
    return f


def test_same_stem_corrupt_and_count(model, frames, tmp_path, monkeypatch, capsys):
    before = tree_hash(frames)
    code, out, err = run([model/"model.pt", frames, tmp_path/"pred"], monkeypatch, capsys)
    assert code == 1 and tree_hash(frames) == before
    assert "corrupt.png: unreadable or corrupt image" in err and "Traceback" not in err
    written = {p.name for p in (tmp_path/"pred").iterdir()}
    ok = ["a_bmp", "a_png", "blank_png", "scene_mask_png"]
    assert written == {f"{b}_{k}.png" for b in ok for k in OUTPUT_KINDS} | {"frames.csv", "detections.csv", "errors.txt"}
    assert out.startswith(f"{len(ok)} frame(s) predicted, 4 target(s)")
    rows = list(csv.DictReader(open(tmp_path/"pred"/"frames.csv")))
    assert [(Path(r["frame"]).name, r["status"], r["targets"]) for r in rows] == \
        [("a.bmp", "ok", "1"), ("a.png", "ok", "1"), ("blank.png", "ok", "1"), ("corrupt.png", "failed", ""), ("scene_mask.png", "ok", "1")]
    dets = list(csv.DictReader(open(tmp_path/"pred"/"detections.csv")))
    assert dets[0]["area"] == str(40 * 50) and dets[0]["width"] == "50" and dets[0]["height"] == "40"
    assert (tmp_path/"pred"/"errors.txt").read_text().count("\n") == 1
    # a second run into the same folder reads only the frames, never the outputs, and still leaves the inputs alone
    code, out, _ = run([model/"model.pt", frames, tmp_path/"pred"], monkeypatch, capsys)
    assert code == 1 and out.startswith("4 frame(s)") and tree_hash(frames) == before


@pytest.mark.parametrize("where", ["same", "inside"])
def test_refuses_output_in_frames_folder(model, frames, where, monkeypatch, capsys):
    before = tree_hash(frames)
    out_dir = frames if where == "same" else frames/"pred"
    code, _, err = run([model/"model.pt", frames, out_dir], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "choose a folder outside it" in err
    assert tree_hash(frames) == before and not (frames/"pred").exists()


def test_refuses_foreign_nonempty_output(model, frames, tmp_path, monkeypatch, capsys):
    mine = tmp_path/"mine"; mine.mkdir(); (mine/"a_png_mask.png").write_bytes(b"my own file")
    before = tree_hash(mine)
    code, _, err = run([model/"model.pt", frames, mine], monkeypatch, capsys)
    assert code == 2 and "not an earlier dgspnet_predict output" in err and tree_hash(mine) == before


@pytest.mark.parametrize("ck,message", [
    ("missing.pt", "missing.pt: no such checkpoint file"),
    ("notes.pt", "notes.pt: not a PyTorch checkpoint"),
    ("encoder.pt", "encoder.pt: a pretraining checkpoint (encoder weights only); use the trained model of the train stage, outputs/train/model.pt"),
    ("misfit.pt", "misfit.pt: weights do not fit the model its config describes"),
    ("needs_clip.pt", "CLIP text-encoder weights not found"),
])
def test_checkpoint_errors(model, frames, tmp_path, ck, message, monkeypatch, capsys):
    before = tree_hash(frames)
    code, _, err = run([model/ck, frames, tmp_path/"pred"], monkeypatch, capsys)
    assert code == 2 and message in err and "Traceback" not in err and err.startswith("dgspnet_predict: error: ")
    if ck != "needs_clip.pt": assert err.count("\n") == 1      # the CLIP message goes on to say how to provide them
    assert tree_hash(frames) == before and not (tmp_path/"pred").exists()


def test_debug_shows_traceback(model, frames, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["dgspnet_predict", str(model/"encoder.pt"), str(frames), str(tmp_path/"p"), "--debug"])
    with pytest.raises(Exception, match="a pretraining checkpoint"): predict_cli()


@pytest.mark.parametrize("case", ["missing", "empty", "not_image"])
def test_input_errors(model, tmp_path, case, monkeypatch, capsys):
    (tmp_path/"empty").mkdir(); (tmp_path/"notes.txt").write_text("x")
    path, message = {"missing": (tmp_path/"nope", "nope: no such frames folder or file"),
                     "empty": (tmp_path/"empty", "empty: no image files"),
                     "not_image": (tmp_path/"notes.txt", "notes.txt: not an image file")}[case]
    code, _, err = run([model/"model.pt", path, tmp_path/"pred"], monkeypatch, capsys)
    assert code == 2 and message in err and err.count("\n") == 1 and not (tmp_path/"pred").exists()


def test_one_file_and_several_files(model, frames, tmp_path, monkeypatch, capsys):
    before = tree_hash(frames)
    code, out, _ = run([model/"model.pt", frames/"a.png", tmp_path/"one"], monkeypatch, capsys)
    assert code == 0 and out.startswith("1 frame(s)") and (tmp_path/"one"/"a_png_overlay.png").is_file()
    code, out, _ = run([model/"model.pt", frames/"a.png", frames/"a.bmp", tmp_path/"two"], monkeypatch, capsys)
    assert code == 0 and out.startswith("2 frame(s)") and tree_hash(frames) == before


def test_nan_frame_fails_alone(model, frames, tmp_path, monkeypatch, capsys):
    Image.fromarray(np.full((20, 20), np.nan, np.float32), "F").save(frames/"nan.tif")
    before = tree_hash(frames)
    code, out, err = run([model/"model.pt", frames, tmp_path/"pred"], monkeypatch, capsys)
    assert code == 1 and "nan.tif: the image has non-finite pixel values" in err
    assert "nan.tif: the image has non-finite" in (tmp_path/"pred"/"errors.txt").read_text()
    assert not any(p.name.startswith("nan_tif") for p in (tmp_path/"pred").iterdir()) and tree_hash(frames) == before


def test_out_of_memory_and_nonfinite_output_fail_alone(model, frames, tmp_path):
    trained = load_trained(model/"model.pt")
    def forward(x, scenes=None):
        if x.shape[-1] > 64: raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if tuple(x.shape[-2:]) == (32, 32): return torch.full_like(x, float("nan"))
        return x
    trained.net.forward = forward
    Image.fromarray(np.zeros((70, 100), np.uint8)).save(frames/"huge.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(frames/"tiny.png")   # pads to 32: NaN output
    before = tree_hash(frames)
    res = predict_frames(trained, frames, tmp_path/"pred", progress=False)
    assert set(Path(k).name for k in res["failed"]) == {"corrupt.png", "huge.png", "tiny.png"}
    errors = (tmp_path/"pred"/"errors.txt").read_text()
    assert "huge.png: out of memory on this 70x100 frame" in errors and "try a smaller --tile (now 1024)" in errors
    assert "tiny.png: the network's output is not finite" in errors
    assert [r["status"] for r in res["frames"] if Path(r["frame"]).name == "a.png"] == ["ok"]
    res = predict_frames(trained, frames/"huge.png", tmp_path/"pred", tile=64, overlap=16, progress=False)
    assert res["failed"] == {} and tree_hash(frames) == before


def test_detections_and_marks(tmp_path):
    "A frame with a 1-pixel and a 2x3 target: the API's records equal detections.csv, and the overlay circles both."
    cfg = config_from_dict(TINY)
    from dgspnet.checkpoint import Trained
    trained = Trained(build_model(cfg).eval(), cfg, {"mean": 0.5, "std": 0.1}, {})
    trained.net.forward = lambda x, scenes=None: x * 10 - 3
    f = tmp_path/"frames"
    f.mkdir()
    a = np.zeros((40, 50), np.uint8); a[5, 7] = 255; a[20:22, 30:33] = 200
    Image.fromarray(a).save(f/"two.png")
    res = predict_frames(trained, f, tmp_path/"pred", progress=False)
    assert [(d["target"], d["x"], d["y"], d["area"], d["left"], d["top"], d["width"], d["height"]) for d in res["detections"]] == \
        [(1, 7.0, 5.0, 1, 7, 5, 1, 1), (2, 31.0, 20.5, 6, 30, 20, 3, 2)]
    rows = list(csv.DictReader(open(tmp_path/"pred"/"detections.csv")))
    assert [{k: str(v) for k, v in d.items()} for d in res["detections"]] == rows
    ov = np.asarray(Image.open(tmp_path/"pred"/"two_png_overlay.png"))
    assert (ov[5 + 6, 7] == [0, 255, 255]).all() and (ov[5, 7] == [255, 38, 38]).all()


def test_console_script_no_traceback(model, frames, tmp_path):
    "The real entry point in a fresh process: a missing checkpoint is one line on stderr, exit 2."
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([str(Path(sys.executable).parent / "dgspnet_predict"),
                        str(tmp_path/"none.pt"), str(frames), str(tmp_path/"pred")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.strip().endswith("none.pt: no such checkpoint file") and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def small_trained():
    "A tiny DGSPNet trained for 200 steps on 64 synthetic 64x64 frames (about 30 s on one CPU thread); finds targets."
    from dgspnet.checkpoint import Trained
    from dgspnet.losses import SegmentationLoss
    from dgspnet.synthetic import synthetic_sample
    torch.manual_seed(0)
    cfg = config_from_dict(TINY)
    net = build_model(cfg).freeze_inversion().train()
    samples = [synthetic_sample(np.random.default_rng(i), 64, snr=(6.0, 10.0)) for i in range(64)]
    imgs, masks = np.stack([s[0] for s in samples]) / 255, np.stack([s[1] for s in samples])
    stats = {"mean": float(imgs.mean()), "std": float(imgs.std())}
    x = torch.tensor((imgs - stats["mean"]) / stats["std"], dtype=torch.float32)[:, None]
    y = torch.tensor(masks, dtype=torch.float32)[:, None]
    opt, loss_fn = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=3e-3), SegmentationLoss()
    for step in range(200):
        i = torch.from_numpy(np.random.default_rng(step).choice(64, 8, replace=False))
        loss = loss_fn(net(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return Trained(net.eval(), cfg, stats, {})


def write_bit_depths(folder, scene) -> dict:
    "The 8-bit `scene` as 8-bit PNG, as 10/12/14/16-bit values in 16-bit PNGs, and as float TIFFs on [0, 1] and 0-255."
    folder.mkdir()
    files = {"8": folder/"d08.png", "unit": folder/"f_unit.tif", "0-255": folder/"f_255.tif"}
    Image.fromarray(scene).save(files["8"])
    for b in (10, 12, 14, 16):
        files[str(b)] = folder/f"d{b}.png"
        Image.fromarray(np.round(scene / 255 * (2**b - 1)).astype(np.uint16)).save(files[str(b)])
    Image.fromarray((scene / 255).astype(np.float32)).save(files["unit"])
    Image.fromarray(scene.astype(np.float32)).save(files["0-255"])
    return files


def test_every_bit_depth_same_detections(small_trained, tmp_path):
    """One synthetic scene with 3 targets at every bit depth: the trained model finds the same 3 targets in each.

    Each depth is the 8-bit scene up to its own rounding (at most half a 10-bit step, 0.5/1023), so the probability
    maps agree within 0.02; detections are equal, except that the 10-bit rounding may move an edge pixel whose
    probability is that close to the threshold (here one pixel at 0.503): same targets, area within one pixel."""
    from dgspnet.predict import predict_frame
    from dgspnet.synthetic import synthetic_sample
    scene, mask, _ = synthetic_sample(np.random.default_rng(100), 64, snr=(6.0, 10.0))
    files = write_bit_depths(tmp_path/"frames", scene)
    probs = {k: predict_frame(small_trained, f, 1024, 128)[1] for k, f in files.items()}
    gaps = {k: float(np.abs(p - probs["8"]).max()) for k, p in probs.items()}
    assert max(gaps.values()) <= 0.02, gaps
    res = predict_frames(small_trained, tmp_path/"frames", tmp_path/"pred", progress=False)
    geometry = lambda res, f: [(d["x"], d["y"], d["area"], d["left"], d["top"], d["width"], d["height"])
                               for d in res["detections"] if d["frame"] == str(f)]
    want = geometry(res, files["8"])
    assert len(want) == 3 and all(mask[round(y), round(x)] for x, y, *_ in want)   # the scene's 3 targets
    for k in ("12", "14", "16", "unit", "0-255"): assert geometry(res, files[k]) == want, k
    ten = geometry(res, files["10"])
    assert len(ten) == 3, ten
    assert all(abs(a[0] - b[0]) <= 0.5 and abs(a[1] - b[1]) <= 0.5 and abs(a[2] - b[2]) <= 1 for a, b in zip(ten, want))
    rows = {Path(r["frame"]).name: r for r in csv.DictReader(open(tmp_path/"pred"/"frames.csv"))}
    top = int(scene.max())   # 208: each depth's maximum is still above the next smaller depth's range
    assert {n: r["intensity"] for n, r in rows.items()} == {"d08.png": "uint8 / 255",
        **{f"d{b}.png": f"uint16 {b}-bit (max {round(top / 255 * (2**b - 1))}) / {2**b - 1}" for b in (10, 12, 14, 16)},
        "f_unit.tif": f"float32 [0, 1] (max {top / 255:.6g}) as stored",
        "f_255.tif": f"float32 0-255 (max {top}) / 255"}
    assert all(r["warning"] == "" for r in rows.values()) and res["warnings"] == {}
    # the 14-bit frame read at 16-bit full scale (forced) is 4x too dark: the trained model loses its targets
    dark = predict_frames(small_trained, files["14"], tmp_path/"pred16", intensity=16, progress=False)
    assert geometry(dark, files["14"]) == []


def test_ambiguous_frames_warn(model, tmp_path, capsys):
    "A 16-bit frame with values up to 200, a float frame with negatives, a constant frame: predicted, warned, recorded."
    f = tmp_path/"frames"
    f.mkdir()
    img = np.random.default_rng(0).integers(0, 201, (40, 50))
    Image.fromarray(img.astype(np.uint16)).save(f/"dark16.png")
    Image.fromarray(img.astype(np.float32) - 50).save(f/"signed.tif")
    Image.fromarray(np.full((40, 50), 3000, np.uint16)).save(f/"flat16.png")
    assert run_predict(model/"model.pt", [f, tmp_path/"pred"]) == 0
    out, err = capsys.readouterr()
    assert out.strip().endswith("0 failed; 3 with an intensity warning (frames.csv)")
    rows = {Path(r["frame"]).name: r for r in csv.DictReader(open(tmp_path/"pred"/"frames.csv"))}
    assert [rows[n]["status"] for n in sorted(rows)] == ["ok"] * 3
    assert rows["dark16.png"]["intensity"] == "uint16 0-255 (max 200) / 255"
    assert "read as 8-bit values" in rows["dark16.png"]["warning"]
    assert rows["signed.tif"]["intensity"] == "float32 min-max (-50 -> 0, 150 -> 1)"
    assert rows["signed.tif"]["warning"].startswith("negative values (min -50): no bit depth fits")
    assert rows["flat16.png"]["warning"].startswith("constant frame (every value 3000)")
    for n in rows: assert f"WARNING {f/n}: {rows[n]['warning']}" in err


def test_forced_intensity(model, tmp_path, capsys):
    "intensity= forces one rule on every frame, warning where values fall outside it; an unknown rule: exit 2."
    f = tmp_path/"frames"
    f.mkdir()
    Image.fromarray(np.arange(2000, dtype=np.uint16).reshape(40, 50) * 8).save(f/"a.png")
    assert run_predict(model/"model.pt", [f, tmp_path/"pred"], intensity="12") == 0
    row = next(csv.DictReader(open(tmp_path/"pred"/"frames.csv")))
    assert row["intensity"] == "uint16 forced 12-bit (max 15992) / 4095"
    assert row["warning"] == "max 15992 above 4095: values outside [0, 1] after scaling"
    capsys.readouterr()
    assert run_predict(model/"model.pt", [f, tmp_path/"pred2"], intensity="11") == 2
    err = capsys.readouterr().err
    rules = "auto, 8, 10, 12, 14, 16, unit, minmax"
    assert err == f"dgspnet_predict: error: --intensity '11' is not a rule: use one of {rules}\n"
    assert not (tmp_path/"pred2").exists()
