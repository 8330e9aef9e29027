"""The data layer on the real benchmarks in ../shared/datasets (skipped, with the reason, where they are absent).

Set DGSPNET_DATASETS to read them from another folder.
"""
import hashlib, json, os, time
from pathlib import Path

import pytest
from PIL import Image

from dgspnet.data import (DatasetError, IRSTDDataset, detect_layout, load_split_names, prepare_dataset,
                          sample_paths, validate_dataset)

DATASETS = Path(os.environ.get("DGSPNET_DATASETS", Path(__file__).resolve().parents[2]/"shared"/"datasets"))
# name -> (train, test) counts as published, and the samples whose mask size differs from the image's
EXPECTED = {"NUAA-SIRST": ((213, 214), {"Misc_111"}), "NUDT-SIRST": ((663, 664), set())}


def _root(name):
    root = DATASETS/name
    if not root.is_dir(): pytest.skip(f"real dataset {name} not found at {root} (set DGSPNET_DATASETS to its parent folder)")
    return root


def _snapshot(root):
    "Every file under `root` with its size, mtime and content hash."
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", EXPECTED)
def test_counts_and_alignment(name):
    "Published split sizes, disjoint splits, and every image with a mask of its size (read from the PNG headers)."
    root = _root(name)
    (n_train, n_test), mismatched = EXPECTED[name]
    assert detect_layout(root) == "plain"
    train, test = load_split_names(root, "train"), load_split_names(root, "test")
    assert (len(train), len(test)) == (n_train, n_test)
    assert len(set(train)) == n_train and len(set(test)) == n_test and not set(train) & set(test)
    sizes = {}
    for n in train + test:
        img, msk = sample_paths(root, n)
        with Image.open(img) as a, Image.open(msk) as b: sizes[n] = (a.size, b.size)
    assert {n for n, (a, b) in sizes.items() if a != b} == mismatched


@pytest.mark.parametrize("name", EXPECTED)
def test_validate(name):
    "Full validation (every file decoded): NUDT-SIRST is clean; NUAA-SIRST has one mask drawn at another scale."
    root = _root(name)
    (n_train, n_test), mismatched = EXPECTED[name]
    if mismatched:
        with pytest.raises(DatasetError) as e: validate_dataset(root)
        assert [p.split(":")[0] for p in e.value.problems] == [f"masks/{n}.png" for n in sorted(mismatched)]
        rep = validate_dataset(root, skip_bad=True)
        assert [s["name"] for s in rep.skipped] == sorted(mismatched)
    t = time.perf_counter()
    rep = validate_dataset(root, resize_masks=True)
    print(f"\n{name}: validate_dataset took {time.perf_counter() - t:.1f} s")
    assert (len(rep.train), len(rep.test), rep.problems) == (n_train, n_test, [])
    assert set(rep.resized_masks) == mismatched


@pytest.mark.parametrize("name", EXPECTED)
def test_prepare_and_load(name, tmp_path):
    "prepare_dataset writes the manifest, leaves the source untouched, and every sample loads aligned."
    root = _root(name)
    (n_train, n_test), mismatched = EXPECTED[name]
    before = _snapshot(root)
    t = time.perf_counter()
    man = json.loads(prepare_dataset(root, tmp_path, resize_masks=True).read_text())
    print(f"\n{name}: prepare_dataset took {time.perf_counter() - t:.1f} s; stats {man['stats']}")
    assert (len(man["train"]), len(man["test"]), man["skipped"]) == (n_train, n_test, [])
    assert 0.2 < man["stats"]["mean"] < 0.7 and 0.05 < man["stats"]["std"] < 0.4
    assert _snapshot(root) == before
    train = IRSTDDataset(tmp_path/"manifest.json", "train")
    it = train[0]
    assert it["image"].shape == it["mask"].shape == (1, 256, 256)
    test = IRSTDDataset(tmp_path/"manifest.json", "test")
    for n in sorted(mismatched) or test.names[:1]:
        it = test[test.names.index(n)]
        h, w = it["size"]
        assert it["image"].shape == it["mask"].shape and it["image"].shape[1:] == (h, w)  # whole and unpadded
        assert it["mask"].sum() > 0
