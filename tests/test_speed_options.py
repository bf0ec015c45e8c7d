"""bf16 autocast and channels_last (DevNet options, off by default): they run on CPU, keep the
ranking on a separable set, and train / score the way they claim (float32 loss, NHWC weights,
inference mode at evaluation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import smooth_blob_split
from sklearn.metrics import roc_auc_score
from torch import nn

from fsad_bench.detectors.base import TrainSet
from fsad_bench.errors import UserError
from fsad_methods.devnet import DevNet
from fsad_methods.training import Schedule, SpeedOptions, predict, to_uint8_tensor, train_balanced


def tiny_devnet(**speed: bool) -> DevNet:
    return DevNet(DevNet.Config(backbone="resnet18_w16", weights="none", epochs=3, steps_per_epoch=8,
                                batch_size=16, lr=1e-3, bn_recalibration=True, n_scales=1, **speed))


def _cuda_or_cpu_refused(speed: dict[str, bool]) -> str:
    """The device a bf16 test runs on; on a machine without CUDA, check bf16 is refused on the CPU."""
    if torch.cuda.is_available():
        return "cuda"
    train, labels, _, _ = smooth_blob_split(seed=0)
    with pytest.raises(UserError, match="amp_bf16 is supported on CUDA only"):
        tiny_devnet(**speed).fit(TrainSet(train, labels, seed=0))
    return ""


@pytest.mark.parametrize("speed", [{"channels_last": True}, {"amp_bf16": True},
                                   {"amp_bf16": True, "channels_last": True}])
def test_devnet_fit_and_score_with_speed_options_keep_a_high_auc(speed):
    device = _cuda_or_cpu_refused(speed) if speed.get("amp_bf16") else "cpu"
    if not device:
        return  # bf16 on a CPU: refused with its reason (checked above)
    train, labels, test, test_labels = smooth_blob_split(seed=0)
    det = tiny_devnet(**speed).fit(TrainSet(train, labels, seed=0, device=device))
    scores = det.score(test)
    assert scores.dtype == np.float32 and np.all(np.isfinite(scores))
    assert roc_auc_score(test_labels, scores) >= 0.9
    assert all(np.isfinite(det.loss_history))
    assert det.info["amp_bf16"] == speed.get("amp_bf16", False)
    if speed.get("channels_last"):
        conv = next(m for m in det.network.modules() if isinstance(m, nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_speed_options_are_off_by_default_and_settable_like_any_hyper_parameter():
    assert not DevNet.Config().amp_bf16 and not DevNet.Config().channels_last
    config = DevNet.config_from_params({"amp_bf16": "true", "channels_last": "yes"})
    assert config.speed == SpeedOptions(amp_bf16=True, channels_last=True)
    from fsad_methods.flos import FLOS  # FLOS trains through DevNet.fit: it inherits the options
    assert FLOS.config_from_params({"amp_bf16": "1"}).amp_bf16


class Recorder(nn.Module):
    """A tiny scorer that records the dtype of its output and whether it ran in inference mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.seen: list[tuple[torch.dtype, bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x).mean(dim=(1, 2, 3))
        self.seen.append((out.dtype, torch.is_inference_mode_enabled(),
                          x.is_contiguous(memory_format=torch.channels_last)))
        return out


def test_training_forward_runs_in_bf16_and_the_loss_in_float32():
    rng = np.random.default_rng(0)
    images = to_uint8_tensor(rng.integers(0, 255, (12, 16, 16, 3), dtype=np.uint8), "cpu")
    labels = np.r_[np.zeros(8, int), np.ones(4, int)]
    model, loss_dtypes = Recorder(), []

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss_dtypes.append(out.dtype)
        return (out - y.float()).pow(2).mean()

    train_balanced(model, images, labels, Schedule(epochs=1, steps_per_epoch=2, batch_size=4), loss_fn, 0,
                   speed=SpeedOptions(amp_bf16=True, channels_last=True))
    assert [s[0] for s in model.seen] == [torch.bfloat16] * 2 and all(s[2] for s in model.seen)
    assert loss_dtypes == [torch.float32] * 2
    assert model.conv.weight.dtype == torch.float32  # master weights stay float32


def test_predict_runs_in_inference_mode_in_batches():
    model = Recorder()
    images = np.random.default_rng(0).integers(0, 255, (10, 16, 16, 3), dtype=np.uint8)
    out = predict(model, images, "cpu", batch_size=4)
    assert out.shape == (10,) and out.dtype == np.float32
    assert len(model.seen) == 3 and all(inference for _, inference, _ in model.seen)
    assert not model.training
    bf16 = predict(model, images, "cpu", batch_size=64, speed=SpeedOptions(amp_bf16=True))
    assert model.seen[-1][0] == torch.bfloat16 and bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, out, atol=0.05)
