"""No operation of a pretraining or training step is one that torch documents as raising on CUDA in deterministic mode.

`base.deterministic: true` turns on `torch.use_deterministic_algorithms(True)`. Its docstring (the installed torch's)
lists operations that then raise a RuntimeError on CUDA, most of them in their backward pass. These tests record,
on CPU, every aten operation that one pretraining step and one training step dispatch (forward and backward) and fail
if any of them is on that list, so that no change can bring one back unseen before it reaches a GPU.
"""
import re

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from dgspnet.config import config_from_dict
from dgspnet.checkpoint import build_model
from dgspnet.losses import PretrainLoss, SegmentationLoss
from dgspnet.model import DGSPNetPretrainer
from dgspnet.train import _pretrain_step, _train_step

# documented name (as in the docstring) -> the aten operations that implement the documented (raising) case
ATEN = {
    "torch.nn.AvgPool3d": {"avg_pool3d_backward"},
    "torch.nn.AdaptiveAvgPool2d": {"_adaptive_avg_pool2d_backward", "adaptive_avg_pool2d_backward"},
    "torch.nn.AdaptiveAvgPool3d": {"_adaptive_avg_pool3d_backward", "adaptive_avg_pool3d_backward"},
    "torch.nn.AdaptiveMaxPool2d": {"adaptive_max_pool2d_backward"},
    "torch.nn.FractionalMaxPool2d": {"fractional_max_pool2d_backward"},
    "torch.nn.FractionalMaxPool3d": {"fractional_max_pool3d_backward"},
    "torch.nn.MaxUnpool1d": {"max_unpool2d"},
    "torch.nn.MaxUnpool2d": {"max_unpool2d"},
    "torch.nn.MaxUnpool3d": {"max_unpool3d"},
    "torch.nn.functional.interpolate": {"upsample_linear1d_backward", "upsample_bilinear2d_backward",
                                        "upsample_bicubic2d_backward", "upsample_trilinear3d_backward",
                                        "_upsample_bilinear2d_aa_backward", "_upsample_bicubic2d_aa_backward"},
    "torch.nn.ReflectionPad1d": {"reflection_pad1d_backward"},
    "torch.nn.ReflectionPad2d": {"reflection_pad2d_backward"},
    "torch.nn.ReflectionPad3d": {"reflection_pad3d_backward"},
    "torch.nn.NLLLoss": {"nll_loss", "nll_loss_forward", "nll_loss2d", "nll_loss2d_forward", "nll_loss_nd"},
    "torch.nn.CTCLoss": {"_ctc_loss_backward"},
    "torch.nn.EmbeddingBag": {"_embedding_bag_backward", "_embedding_bag_dense_backward"},
    "torch.Tensor.put_": {"put_", "put"},
    "torch.histc": {"histc"},
    "torch.bincount": {"bincount"},
    "torch.median": {"median"},
    "torch.nn.functional.grid_sample": {"grid_sampler_2d_backward", "grid_sampler_3d_backward"},
    "torch.Tensor.scatter_reduce": {"scatter_reduce", "scatter_reduce_"},  # only reduce='prod' raises; we use none
    "torch.Tensor.resize_": set(),  # only on quantized tensors
}


def documented_raising() -> list:
    "The names in the installed torch's list of operations that raise in deterministic mode."
    doc = torch.use_deterministic_algorithms.__doc__
    part = doc[doc.index("normally-nondeterministic operations will throw a"):doc.index("In addition")]
    return re.findall(r"^\s*\* :(?:class|func):`([\w.]+)`", part, re.M)


FORBIDDEN = set().union(*ATEN.values())


class Record(TorchDispatchMode):
    "Records the name of every aten operation dispatched inside the `with` block."
    def __init__(self):
        super().__init__(); self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_the_documented_list_is_known():
    names = documented_raising()
    assert len(names) >= 20, names
    unknown = sorted(set(names) - set(ATEN))
    assert not unknown, f"torch documents new operations that raise in deterministic mode: {unknown}; add their aten names to ATEN"


def test_recorder_sees_the_forbidden_ops():
    "The recorder catches what it must: the operations we replaced, and cross_entropy's nll_loss."
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    with Record() as r:
        y = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False) + F.adaptive_max_pool2d(x, 1)
        y.sum().backward()
        F.cross_entropy(torch.randn(3, 4), torch.tensor([0, 1, 2]))
    assert {"upsample_bilinear2d_backward", "adaptive_max_pool2d_backward"} <= r.ops & FORBIDDEN
    assert r.ops & ATEN["torch.nn.NLLLoss"]


def tiny(**model):
    return config_from_dict({"model": {"widths": [4, 8, 16, 32, 64], "clip_weights": "none", **model}})


BATCH = {"image": torch.randn(4, 1, 64, 64), "mask": (torch.rand(4, 1, 64, 64) > 0.98).float(), "scene": ["sky"] * 4}


@pytest.mark.parametrize("model", [{}, {"deep_supervision": True, "head_prior": 0.01},
                                   {"tgsa_norm": "sigmoid"}, {"tgca": False, "cross_attn": False, "tgsa": False}])
def test_training_step_ops(model):
    cfg = tiny(**model)
    net = build_model(cfg).freeze_inversion().train()
    step = _train_step(SegmentationLoss(), 1.0 if cfg.model.deep_supervision else 0.0)
    with Record() as r:
        out = step(net, BATCH)
        out["loss"].backward()
    assert len(r.ops) > 30 and "convolution_backward" in r.ops
    assert not r.ops & FORBIDDEN, f"raise on CUDA in deterministic mode: {sorted(r.ops & FORBIDDEN)}"


@pytest.mark.parametrize("model", [{}, {"tgca": False, "cross_attn": False, "tgsa": False}])
def test_pretraining_step_ops(model):
    pre = DGSPNetPretrainer(build_model(tiny(**model))).train()
    with Record() as r:
        out = _pretrain_step(PretrainLoss())(pre, BATCH)
        out["loss"].backward()
    assert "convolution_backward" in r.ops
    assert not r.ops & FORBIDDEN, f"raise on CUDA in deterministic mode: {sorted(r.ops & FORBIDDEN)}"
