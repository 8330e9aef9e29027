"""What float16 weights change in the reference model's metrics on NUAA-SIRST's test split.

    python benchmarks/half_weights.py [../shared/datasets/NUAA-SIRST]

Scores models/nuaa-sirst-cpu-100.pt as stored (float32) and with its weights rounded to float16 (what
`tools/half_weights.py` writes), unrounded, and writes both with the machine to benchmarks/results/half_weights.json.
"""

import json, sys, tempfile
from pathlib import Path

import torch

from dgspnet.checkpoint import load_trained
from dgspnet.data import IRSTDDataset, prepare_dataset
from dgspnet.inference import prepare_for_inference, test_metrics
from dgspnet.metrics import in_paper_units
from machine import machine_line

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "nuaa-sirst-cpu-100.pt"


def scores(trained, ds) -> dict:
    "The four test metrics in the paper's units, with the net prepared as evaluate and predict prepare it."
    return in_paper_units(test_metrics(prepare_for_inference(trained.net), ds, trained.threshold))


def main(data=ROOT.parent / "shared" / "datasets" / "NUAA-SIRST"):
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        ds = IRSTDDataset(prepare_dataset(Path(data), tmp, resize_masks=True), "test", train=False)
        full = load_trained(MODEL)
        half = load_trained(MODEL)
        with torch.no_grad():
            for v in half.net.state_dict().values():  # weights and buffers, as tools/half_weights.py rounds them
                if v.is_floating_point():
                    v.copy_(v.half().float())
        out = dict(machine=machine_line(), model=MODEL.name, float32=scores(full, ds), float16=scores(half, ds))
    out["difference"] = {k: out["float16"][k] - out["float32"][k] for k in out["float32"]}
    path = ROOT / "benchmarks" / "results" / "half_weights.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:])
