"""The one embedding loop and the one AMP policy (dsn_lab.inference), against a plain loop."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dsn_lab.inference import AmpPolicy, amp_policy, autocast, encode, unwrap


class Out(NamedTuple):
    logits: torch.Tensor
    kd_logits: torch.Tensor
    code: torch.Tensor
    features: torch.Tensor


class Tiny(nn.Module):
    """DSNModel's call signature; BatchNorm makes eval and train mode differ; the domain shifts each row."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3)
        self.bn = nn.BatchNorm1d(5)
        self.hash = nn.Linear(5, 4)
        self.cls = nn.Linear(4, 3)
        self.seen_training: list[bool] = []
        self.seen_autocast: list[bool] = []

    def forward(self, x: torch.Tensor, domain) -> Out:
        self.seen_training.append(self.training)
        self.seen_autocast.append(torch.is_autocast_enabled(x.device.type))
        f = self.bn(self.conv(x).mean((2, 3)))
        flag = domain.reshape(-1, 1).float() if isinstance(domain, torch.Tensor) else float(domain)
        code = self.hash(f) + 10 * flag
        return Out(self.cls(code), torch.zeros(len(x), 2), code, f)


def _data(n: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 8, 8, generator=g), torch.arange(n) % 3


def _model() -> Tiny:
    torch.manual_seed(0)
    m = Tiny()
    m.bn.running_mean.uniform_(-1, 1)  # eval-mode statistics that differ from any batch's
    m.bn.running_var.uniform_(0.5, 2)
    return m


def _plain(model: Tiny, x: torch.Tensor, domain, field: str) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return getattr(model(x, domain), field).float().numpy()


@pytest.mark.parametrize("field", ["code", "features", "logits"])
def test_encode_matches_a_plain_loop_in_eval_mode(field: str) -> None:
    x, y = _data()
    model = _model().train()
    feats, labels = encode(model, DataLoader(TensorDataset(x, y), batch_size=4), domain=1, output=field)
    assert model.training  # mode restored
    assert model.seen_training == [False, False, False]  # the batches ran in eval mode
    np.testing.assert_allclose(feats, _plain(model, x, 1, field), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, y.numpy())
    assert feats.dtype == np.float32 and labels.dtype == np.int64


def test_domain_from_the_batch_and_several_normalised_outputs() -> None:
    x, y = _data(9)
    dom = (torch.arange(9) % 2).float()
    model = _model()
    out, labels = encode(
        model,
        DataLoader(TensorDataset(x, y, dom), batch_size=4),
        output=("code", "logits"),
        normalize=("code",),
    )
    want = _plain(model, x, dom, "code")
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(out["code"], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["logits"], _plain(model, x, dom, "logits"), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, y.numpy())


def test_tensor_model_output_none_and_wrappers() -> None:
    x, y = _data(5)
    trunk = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 6))
    wrapped = nn.DataParallel(trunk)  # the loop runs the module inside
    feats, _ = encode(lambda im, d: trunk(im) * (d + 1), [(x, y)], domain=1, output=None)
    np.testing.assert_allclose(feats, (trunk(x) * 2).detach().numpy(), rtol=1e-6)
    assert unwrap(wrapped) is trunk


def test_a_plain_tuple_output_in_dsn_order_is_read_by_position() -> None:
    x, y = _data(5)
    model = _model().eval()  # a plain function is run as it is (no mode to switch)
    feats, _ = encode(lambda im, d: tuple(model(im, d)), [(x, y)], domain=0, output="features")
    np.testing.assert_allclose(feats, _plain(model, x, 0, "features"), rtol=1e-5, atol=1e-6)


def test_errors_name_the_fix() -> None:
    x, y = _data(4)
    with pytest.raises(ValueError, match="domain=0"):
        encode(_model(), [(x, y)])
    with pytest.raises(TypeError, match="DSNOutput"):
        encode(lambda im, d: im.mean((2, 3)), [(x, y)], domain=0, output="code")
    with pytest.raises(TypeError, match="output="):
        encode(_model(), [(x, y)], domain=0, output=None)


def test_empty_input_gives_empty_arrays() -> None:
    feats, labels = encode(_model(), [], domain=0)
    assert feats.shape == (0, 0) and labels.shape == (0,)


def test_amp_policy_bf16_fp16_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert amp_policy(True, "cpu") == AmpPolicy(None, False)  # never on the CPU
    assert not amp_policy(True, "cpu").enabled
    assert amp_policy(False, "cuda") == AmpPolicy(None, False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert amp_policy(True, "cuda") == AmpPolicy(torch.bfloat16, False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert amp_policy(True, torch.device("cuda:0")) == AmpPolicy(torch.float16, True)  # fp16 needs a scaler


def test_amp_true_on_cpu_is_fp32_and_an_explicit_dtype_autocasts() -> None:
    x, y = _data(6)
    model = _model()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # an outer region does not leak into the loop
        f32, _ = encode(model, [(x, y)], domain=0, amp=True)
    assert model.seen_autocast == [False]
    np.testing.assert_allclose(f32, _plain(model, x, 0, "code"), rtol=1e-5, atol=1e-6)
    bf, _ = encode(model, [(x, y)], domain=0, amp=torch.bfloat16)
    assert model.seen_autocast[-1] is True
    assert bf.dtype == np.float32 and not np.array_equal(bf, f32)
    np.testing.assert_allclose(bf, f32, atol=0.1)
    with autocast("cpu", None):
        assert not torch.is_autocast_enabled("cpu")


def test_progress_bar_does_not_change_results() -> None:
    x, y = _data(7)
    model = _model()
    a, _ = encode(model, [(x[:4], y[:4]), (x[4:], y[4:])], domain=1, progress=True, total=2)
    b, _ = encode(model, [(x, y)], domain=1, normalize=True)
    np.testing.assert_allclose(F.normalize(torch.from_numpy(a), dim=1).numpy(), b, rtol=1e-5, atol=1e-6)
