"""How much tiled prediction (`dgspnet_predict --tile`) changes the probability map against the whole frame.

    python benchmarks/tiling.py outputs/train/model.pt                 # the default smoke model of `dvc repro`
    python benchmarks/tiling.py MODEL --data data/NUAA-SIRST --frames 3 --tiles 256:128 192:96

For the largest frames among the first 60 of the dataset's images: the largest |tiled - whole| over all pixels
and over the pixels at least 32 px from any cut, the whole map's range, and the IoU of the two thresholded masks.
Writes benchmarks/results/tiling.json (with the model and dataset it used). A benchmark, not a test.
"""

import argparse, glob, json
from pathlib import Path

import numpy as np

from dgspnet.checkpoint import load_trained
from dgspnet.data import read_image
from dgspnet.inference import _cuts, predict_image, predict_tiled, tile_starts

ROOT = Path(__file__).resolve().parents[1]


def distance_to_cuts(h: int, w: int, tile: int, overlap: int) -> np.ndarray:
    "Each pixel's distance (px) to the nearest place where two tiles meet."
    dist = np.full((h, w), 10**6)
    for axis, L in ((0, h), (1, w)):
        inner = [c for a, b in _cuts(tile_starts(L, tile, overlap), tile, L) for c in (a, b) if 0 < c < L]
        if not inner:
            continue
        d = np.min(np.abs(np.arange(L)[:, None] - np.array(inner)[None, :]), 1)
        dist = np.minimum(dist, d[:, None] if axis == 0 else d[None, :])
    return dist


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", default=str(ROOT / "data" / "NUAA-SIRST"))
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--tiles", nargs="*", default=["256:128", "192:96"])
    a = ap.parse_args()
    tr = load_trained(a.model)
    files = sorted(glob.glob(str(Path(a.data) / "images" / "*.png")))[:60]
    largest = sorted(files, key=lambda f: -np.prod(read_image(f).shape))[: a.frames]
    rows = []
    for f in largest:
        img = read_image(f)
        whole = predict_image(tr.net, img, tr.stats)
        for spec in a.tiles:
            tile, overlap = map(int, spec.split(":"))
            tiled = predict_tiled(tr.net, img, tr.stats, tile=tile, overlap=overlap)
            d, far = np.abs(tiled - whole), distance_to_cuts(*img.shape, tile, overlap) >= 32
            mw, mt = whole > tr.threshold, tiled > tr.threshold
            rows.append(
                dict(
                    frame=Path(f).name,
                    size=list(img.shape),
                    tile=tile,
                    overlap=overlap,
                    max_diff=round(float(d.max()), 3),
                    max_diff_32px_from_cuts=round(float(d[far].max()), 3),
                    whole_min=round(float(whole.min()), 3),
                    whole_max=round(float(whole.max()), 3),
                    mask_iou=round(float((mw & mt).sum() / max((mw | mt).sum(), 1)), 3),
                )
            )
            print(rows[-1], flush=True)
    out = ROOT / "benchmarks" / "results" / "tiling.json"
    out.write_text(
        json.dumps(
            dict(
                model=a.model,
                text_tower_random=tr.text_tower_random,
                data=Path(a.data).name,
                threshold=tr.threshold,
                rows=rows,
            ),
            indent=2,
        )
        + "\n"
    )
    print(out)


if __name__ == "__main__":
    main()
