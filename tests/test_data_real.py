"""The data layer's counts and loader contract on the real benchmarks in ../shared/datasets (skipped where absent).

Set DGSPNET_DATASETS to read them from another folder.
"""
import hashlib, json, os
from pathlib import Path

import pytest

from dgspnet.data import IRSTDDataset, prepare_dataset, prepare_summary

DATASETS = Path(os.environ.get("DGSPNET_DATASETS", Path(__file__).resolve().parents[2]/"shared"/"datasets"))
# the train split's statistics and three training items (seed 1, epoch 2) of the released files; the statistics are
# float sums whose last digits differ between CPUs (SIMD widths), so they are compared to 1e-7
RECORDED = {"NUAA-SIRST": ({"mean": 0.44454627612091635, "std": 0.2329089296276884},
                           {0: (41, 5732.1396, 61249.9466, 12.0472), 5: (14, -8831.7474, 20806.2956, 4.8628),
                            100: (88, 35077.0398, 48235.7058, 180.2763)}),
            "NUDT-SIRST": ({"mean": 0.4236229870647098, "std": 0.21784995324693546},
                           {0: (9, -13022.6849, 27204.2592, 3.3444), 5: (47, 35387.1613, 52501.9486, 89.428),
                            100: (61, -57548.5833, 65969.6668, -6.6867)})}
# per training item: target pixels of the crop, then the sum, absolute sum and target-pixel sum of the normalised
# image (float rounding differs between CPUs in the last digits: the sums are compared to 1e-5, the pixels exactly)


def _snapshot(root):
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", RECORDED)
def test_real_counts_and_items(name, tmp_path):
    "Masks are all 0/255 and every frame has a target; stats and training items as before; test items unpadded."
    root = DATASETS/name
    if not root.is_dir(): pytest.skip(f"real dataset {name} not found at {root} (set DGSPNET_DATASETS to its parent folder)")
    before = _snapshot(root)
    p = prepare_dataset(root, tmp_path, resize_masks=True)
    man = json.loads(p.read_text())
    print("\n" + prepare_summary(man, p))
    assert (man["mask_threshold"], man["nonbinary_masks"], man["target_free"]) == (0.5, {}, {"train": [], "test": []})
    assert man["split_files"] == {"train": "train.txt", "test": "test.txt"}
    stats, items = RECORDED[name]
    assert man["stats"] == pytest.approx(stats, rel=1e-7, abs=0)
    tr = IRSTDDataset(p, "train", seed=1)
    tr.set_epoch(2)
    for i, (targets, *sums) in items.items():
        it = tr[i]
        im, m = it["image"].double(), it["mask"]
        assert it["image"].shape == m.shape == (1, 256, 256) and int(m.sum()) == targets, i
        assert [float(im.sum()), float(im.abs().sum()), float((im * m).sum())] == pytest.approx(sums, rel=1e-5, abs=1e-3), i
    te = IRSTDDataset(p, "test")
    for n in ["Misc_111"] if "Misc_111" in te.names else te.names[:1]:
        it = te[te.names.index(n)]
        assert it["image"].shape == it["mask"].shape == (1, *it["size"]) and it["mask"].sum() > 0
    assert _snapshot(root) == before
