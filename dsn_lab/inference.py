"""Running a model for its outputs: the one AMP policy and the one batched embedding loop of the package.

Everything that embeds images goes through :func:`encode` -- the feature cache (``dsn_lab.embed``), the
validation of the paired selection rule (``dsn_lab.selection``), the domain-gap training callback
(``dsn_lab.analysis``) and the frozen-backbone baseline -- so eval mode, ``no_grad``, autocast, the memory
layout and the output handling are decided in one place. Training and evaluation pick their autocast dtype
with :func:`amp_policy`: bf16 where the GPU supports it, else fp16 (which needs a GradScaler to train);
never on the CPU, where the released protocol is fp32.

This module sits at the model layer: it imports torch, numpy and tqdm only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

#: The fields of ``dsn_lab.model.DSNOutput``, the names ``encode(output=...)`` accepts for a DSN model.
OUTPUT_FIELDS = ("logits", "kd_logits", "code", "features")


class AmpPolicy(NamedTuple):
    """``dtype``: the autocast dtype (None: fp32, no autocast); ``scaler``: fp16 training needs one."""

    dtype: torch.dtype | None
    scaler: bool

    @property
    def enabled(self) -> bool:
        return self.dtype is not None


def amp_policy(enabled: bool, device: torch.device | str) -> AmpPolicy:
    """The package's AMP choice: off unless ``enabled`` on CUDA; bf16 where supported, else fp16 + scaler."""
    if not enabled or torch.device(device).type != "cuda":
        return AmpPolicy(None, False)
    if torch.cuda.is_bf16_supported():
        return AmpPolicy(torch.bfloat16, False)
    return AmpPolicy(torch.float16, True)


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> torch.autocast:
    """An autocast region of ``dtype`` on ``device``; ``None`` is an explicitly *disabled* region (fp32 even
    inside an outer autocast)."""
    dev_type = torch.device(device).type
    if dtype is None:
        return torch.autocast(device_type=dev_type, enabled=False)
    return torch.autocast(device_type=dev_type, dtype=dtype)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


class TransformedImages(Dataset):
    """``(image, label)`` items of ``base`` through ``transform`` (base items: ``(image, label[, domain])``).

    A dataset of the package (it has ``load_image``) is read as PIL images and transformed here, whatever
    transform it was built with; any other dataset's tensor images are used as they are.
    """

    def __init__(self, base: Dataset, transform: Callable | None) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if self.transform is not None and hasattr(self.base, "load_image"):
            image, label = self.base.load_image(index)
            return self.transform(image), int(label)
        item = self.base[index]
        image, label = item[0], int(item[1])
        if self.transform is not None and not isinstance(image, torch.Tensor):
            image = self.transform(image)
        return image, label


def image_loader(
    dataset: Dataset,
    *,
    transform: Callable | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """Batches ``(images, labels)`` of ``dataset`` in order, through ``transform`` (see
    :class:`TransformedImages`): the input :func:`encode` takes."""
    return DataLoader(
        TransformedImages(dataset, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )


def _is_channels_last(net: Any) -> bool:
    params = net.parameters() if isinstance(net, nn.Module) else ()
    return any(
        p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
        for p in params
    )


def _pick(out: Any, name: str | None) -> torch.Tensor:
    if name is None:
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"encode(output=None) needs a model that returns a tensor; it returned {type(out).__name__}. "
                f"Fix: pass output= one of {OUTPUT_FIELDS}."
            )
        return out
    if hasattr(out, name):
        return getattr(out, name)
    if isinstance(out, (tuple, list)) and len(out) == len(OUTPUT_FIELDS):  # the released model: a plain tuple
        return out[OUTPUT_FIELDS.index(name)]
    raise TypeError(
        f"encode: model output {type(out).__name__} has no .{name}; the model must return "
        "dsn_lab.model.DSNOutput(logits, kd_logits, code, features), or pass output=None for a model "
        "that returns a feature tensor."
    )


@torch.no_grad()
def encode(
    model: nn.Module,
    batches: Iterable[Sequence[Any]],
    *,
    domain: int | None = None,
    device: torch.device | str | None = None,
    amp: bool | torch.dtype = False,
    output: str | Sequence[str] | None = "code",
    normalize: bool | Sequence[str] = False,
    progress: bool = False,
    desc: str = "embed",
    total: int | None = None,
) -> tuple[Any, np.ndarray]:
    """Run ``model(images, domain)`` over ``batches`` in eval mode: ``(outputs, labels int64 [N])``, in order.

    ``batches`` yields ``(images, labels)`` or ``(images, labels, domain)`` (a DataLoader over a dataset of
    the package, a generator); ``domain`` (0 sketch, 1 photo) is passed for every row, or, when None, each
    batch's third item is. ``output``: a field of the model's output (``"code"``, ``"features"``,
    ``"logits"``, ``"kd_logits"``; a model returning a plain 4-tuple in that order, as the released one does,
    works too) giving a float32 ``[N, D]`` array; a sequence of fields gives a dict of
    such arrays; None takes the output itself (a model returning a tensor). ``normalize``: L2-normalise
    each row (True: every output; a sequence: those fields). ``amp``: :func:`amp_policy` (True/False), or an
    explicit autocast dtype on any device. ``device``: default, the model's. ``progress``: a tqdm bar (none
    in a log or a pipe). The model's train/eval mode is restored afterwards.
    """
    net = unwrap(model) if isinstance(model, nn.Module) else model
    if device is None:
        param = next(iter(net.parameters()), None) if isinstance(net, nn.Module) else None
        device = param.device if param is not None else "cpu"
    dev = torch.device(device)
    dtype = amp if isinstance(amp, torch.dtype) else amp_policy(bool(amp), dev).dtype
    single = output is None or isinstance(output, str)
    names: tuple[str | None, ...] = (output,) if single else tuple(output)  # type: ignore[arg-type]
    to_norm = set(names) if normalize is True else set(normalize or ())
    channels_last = _is_channels_last(net)
    cols: dict[str | None, list[torch.Tensor]] = {n: [] for n in names}
    labels: list[torch.Tensor] = []
    was_training = bool(getattr(net, "training", False))
    if isinstance(net, nn.Module):
        net.eval()
    try:
        # leave=False: no finished bar stays above a table; disable=None: none in a log or a pipe, where each
        # redraw would read as a line of its own (a notebook still shows it)
        it = tqdm(batches, desc=desc, total=total, leave=False, disable=None) if progress else batches
        for batch in it:
            images, lab = batch[0], batch[1]
            if domain is not None:
                flag: Any = domain
            elif len(batch) > 2:
                flag = torch.as_tensor(batch[2]).to(dev, non_blocking=True)
            else:
                raise ValueError("encode: pass domain=0 (sketch) or 1 (photo); the batches carry no domain.")
            images = images.to(dev, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(dev, dtype):
                out = net(images, flag)
            for n in names:
                x = _pick(out, n).detach().float().reshape(images.shape[0], -1)
                if n in to_norm:
                    x = F.normalize(x, dim=1)
                cols[n].append(x.cpu())
            labels.append(torch.as_tensor(lab).reshape(-1).long().cpu())
    finally:
        if isinstance(net, nn.Module):
            net.train(was_training)
    arrays = {
        n: torch.cat(v).numpy().astype(np.float32) if v else np.zeros((0, 0), dtype=np.float32)
        for n, v in cols.items()
    }
    lab_arr = torch.cat(labels).numpy().astype(np.int64) if labels else np.zeros((0,), dtype=np.int64)
    return (arrays[names[0]] if single else arrays), lab_arr
