"""Write a copy of a trained `model.pt` with its floating-point weights stored in half precision.

    python tools/half_weights.py outputs/train/model.pt models/my-model.pt

The copy is half the size. `load_trained` casts the weights back to the model's float32 when it loads them, so the
network computes in float32 with weights rounded to float16: check with `dgspnet_evaluate` that the metrics you care
about hold (for models/nuaa-sirst-cpu-100.pt they moved by less than 0.01, see its card).
"""

import sys

from dgspnet.checkpoint import load_file, save_atomic


def half_weights(src, dst):
    "Save `src` to `dst` with every floating-point tensor of its weights (`state`) as float16."
    ck = load_file(src)
    ck["state"] = {k: v.half() if v.is_floating_point() else v for k, v in ck["state"].items()}
    save_atomic(ck, dst)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    half_weights(*sys.argv[1:])
    print(f"{sys.argv[2]}: written")
