"""The data layer's counts and loader contract on the real benchmarks in ../shared/datasets (skipped where absent).

Set DGSPNET_DATASETS to read them from another folder.
"""
import hashlib, json, os
from pathlib import Path

import pytest

from dgspnet.data import IRSTDDataset, prepare_dataset, prepare_summary

DATASETS = Path(os.environ.get("DGSPNET_DATASETS", Path(__file__).resolve().parents[2]/"shared"/"datasets"))
# stats and training items (seed 1, epoch 2) recorded with the code before test items became unpadded
RECORDED = {"NUAA-SIRST": ({"mean": 0.44454627612091635, "std": 0.2329089296276884},
                           {0: "7b24dc65e81a92c2", 5: "b53444e295ca7ed5", 100: "eab6689766f9e802"}),
            "NUDT-SIRST": ({"mean": 0.4236229870647098, "std": 0.21784995324693546},
                           {0: "9367124ad5801234", 5: "bd41b3b8c82e6598", 100: "4736b6e9a0b37e57"})}


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
    assert man["stats"] == stats
    tr = IRSTDDataset(p, "train", seed=1); tr.set_epoch(2)
    for i, h in items.items():
        it = tr[i]
        assert hashlib.sha1(it["image"].numpy().tobytes() + it["mask"].numpy().tobytes()).hexdigest()[:16] == h, i
    te = IRSTDDataset(p, "test")
    for n in ["Misc_111"] if "Misc_111" in te.names else te.names[:1]:
        it = te[te.names.index(n)]
        assert it["image"].shape == it["mask"].shape == (1, *it["size"]) and it["mask"].sum() > 0
    assert _snapshot(root) == before
