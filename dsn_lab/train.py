"""The DSN training loop: plain PyTorch, resumable, AMP, gradient accumulation, DDP.

One step, as in the released ``src/train_cse_resnet_sketchy_ext.py``: a paired batch of S sketches and P
photos, each with two augmented views, goes through the model in **one** forward pass
``[sketch, photo, sketch_v1, photo_v1, sketch_v2, photo_v2]`` with the domain flags (0 sketch, 1 photo).
CE and the SAKE distillation use the un-augmented images (the KD target comes from the frozen ImageNet
teacher and the WordNet ``cid_mask`` row of each label); SupCon uses the L2-normalised hashing codes of the
augmented views; the sketch memory bank is updated with the un-augmented pooled features and gives the
memory term (flushed every epoch). The step is :func:`dsn_lab.step.dsn_step` (public form
:func:`dsn_lab.step.dsn_losses`); this module adds the optimiser, accumulation, logs and the epoch loop.
Every quirk of the released code is a config field (``cfg.quirks()``); ``faithful=True`` turns them all on.

Differences from the release, each on purpose: the two loaders are seeded per (seed, epoch, position)
instead of shuffled by global RNG (so a resumed run sees the same batches); the in-batch ``randperm``
shuffle is dropped (the order inside a batch changes no loss); model selection is by retrieval mAP on
held-out seen data unless ``selection`` asks for the released rule.

Around the loop, each in its own module: checkpoints, their format, RNG state and resume checks
(:mod:`dsn_lab.checkpoint`; ``last.pt`` every epoch and every ``checkpoint_every`` optimiser steps,
``best.pt`` at the best validation score; resuming from ``last.pt`` reproduces an uninterrupted run, bit for
bit in deterministic CPU mode), the selection rules (:mod:`dsn_lab.selection`), DDP under ``torchrun``
(:mod:`dsn_lab.distributed`: the config's batch sizes are the *global* batch) and the AMP policy
(:func:`dsn_lab.inference.amp_policy`). Read this file top to bottom: helpers, then :func:`train`, then
the trainer's setup, its loop (:meth:`_Trainer.run`) and what the loop calls.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from dsn_lab._atomic import atomic_write_text
from dsn_lab.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    check_resume_config,
    checkpoint_config,
    load_checkpoint,
    restore_training_state,
    save_checkpoint,
    seed_all,
    set_rng_state,
    training_payload,
)
from dsn_lab.config import SELECTIONS as _CONFIG_SELECTIONS
from dsn_lab.config import DSNConfig
from dsn_lab.data.batching import paired_loader_from_config
from dsn_lab.data.transforms import affine_from_config
from dsn_lab.distributed import (
    Dist,
    any_over_ranks,
    barrier,
    broadcast_float,
    check_config,
    close_distributed,
    init_distributed,
    mean_over_ranks,
    slice_batch,
    step_hooks,
    wrap_ddp,
)
from dsn_lab.inference import amp_policy
from dsn_lab.model import build_model
from dsn_lab.probe import probe_head
from dsn_lab.provenance import environment_record, write_environment
from dsn_lab.selection import make_selector, training_sets
from dsn_lab.step import dsn_step, lr_factor, make_optimizer, step_inputs

__all__ = [
    "CONFIG_JSON",
    "HISTORY_CSV",
    "HISTORY_JSON",
    "SELECTIONS",
    "TrainResult",
    "TrainingDivergedError",
    "iter_history",
    "load_history",
    "train",
]

HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
CONFIG_JSON = "config.json"
SELECTIONS = _CONFIG_SELECTIONS

Callback = Callable[[nn.Module, int, int], dict]


class TrainingDivergedError(RuntimeError):
    """A loss term became NaN or infinite; training stopped and the last good checkpoint was kept."""


@dataclass
class TrainResult:
    """What :func:`train` returns. ``history`` is the list of rows also written to history.json/.csv."""

    output_dir: Path
    final_checkpoint: Path
    best_checkpoint: Path | None
    history: list[dict[str, Any]]
    best_metric: float | None
    best_epoch: int | None
    selection: str
    stopped: str = "completed"  # "completed" | "time budget"
    planned_steps: int = 0  # optimiser steps the config asks for (epochs x steps per epoch)
    num_classes: int = 0
    classes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------
# small utilities
# ---------------------------------------------------------------------------------------------------
def _say(msg: str, verbose: bool = True) -> None:
    if not verbose:
        return
    try:
        tqdm.write(msg)
    except Exception:  # noqa: BLE001 - printing must never fail a run
        print(msg, flush=True)


def _fmt_seconds(s: float) -> str:
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def _set_determinism(deterministic: bool, device: torch.device, cudnn: str = "auto") -> None:
    """``deterministic=True`` wins (bit-reproducible; benchmark off). Otherwise on CUDA: ``cudnn="released"``
    sets ``cudnn.deterministic = True`` and then ``cudnn.benchmark = True``, as the released script does
    (module level, then ``main``); ``"auto"``: benchmark only."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        if cudnn == "released":
            torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = True


# ---------------------------------------------------------------------------------------------------
# history
# ---------------------------------------------------------------------------------------------------
def _write_history(out: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_text(out / HISTORY_JSON, json.dumps(history, indent=1, default=float))
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(out / HISTORY_CSV, buf.getvalue())


def load_history(output_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The history rows of a run folder (history.json)."""
    return json.loads((Path(output_dir) / HISTORY_JSON).read_text())


def iter_history(rows: Sequence[dict[str, Any]], kind: str) -> Iterator[dict[str, Any]]:
    """The history rows of one kind ("step", "epoch" or "diverged")."""
    return (r for r in rows if r.get("kind") == kind)


# ---------------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------------
def train(
    cfg: DSNConfig,
    *,
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
    data_root: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    verbose: bool = True,
) -> TrainResult:
    """Train DSN as configured by ``cfg``; returns a :class:`TrainResult`.

    ``resume=True`` continues from ``<output_dir>/last.pt`` when it exists (else starts afresh); a
    checkpoint from another config raises :class:`CheckpointError` naming the differing fields. Without
    ``resume``, an output_dir that already holds a run raises unless ``overwrite=True``. ``callbacks``
    (``callback(model, epoch, step) -> dict``) run at each epoch end in eval mode, their results go into
    the history. ``data_root`` overrides ``cfg.data_root``; ``device`` defaults to CUDA when available.
    A NaN/Inf loss raises :class:`TrainingDivergedError` naming the term; ``last.pt`` stays the last
    good checkpoint.
    """
    d = init_distributed(device)
    try:
        return _Trainer(cfg, callbacks, resume, data_root, device, overwrite, verbose, d).run()
    finally:
        close_distributed(d)


class _Trainer:
    """One run: ``__init__`` checks the output folder, :meth:`_build` makes data, model and optimiser,
    :meth:`run` is the loop."""

    def __init__(
        self,
        cfg: DSNConfig,
        callbacks: Sequence[Callback],
        resume: bool,
        data_root: str | os.PathLike[str] | None,
        device: str | torch.device | None,
        overwrite: bool,
        verbose: bool,
        d: Dist,
    ) -> None:
        self.rule = cfg.selection_rule()  # raises on an unknown selection, naming the choices
        check_config(cfg, d)  # what DDP cannot do, before anything is built
        if cfg.grad_accum_steps < 1:
            raise ValueError(f"grad_accum_steps must be >= 1, got {cfg.grad_accum_steps}.")
        self.cfg, self.callbacks, self.d = cfg, list(callbacks), d
        self.verbose = verbose and d.main
        if device is None:
            device = f"cuda:{d.local_rank}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)
        root = data_root if data_root is not None else cfg.data_root
        self.data_root = Path(root).expanduser() if root is not None else None
        self.out = Path(cfg.output_dir)
        self.last_path, self.best_path = self.out / LAST_NAME, self.out / BEST_NAME
        self.resume_ckpt: dict[str, Any] | None = None
        if resume and self.last_path.is_file():
            self.resume_ckpt = load_checkpoint(self.last_path)
            check_resume_config(cfg, checkpoint_config(self.resume_ckpt), self.last_path)
        elif resume:
            _say(f"resume: no checkpoint at {self.last_path}; starting a new run", self.verbose)
        elif self.last_path.is_file() and not overwrite:
            raise FileExistsError(
                f"{self.out} already holds a run ({self.last_path}). Fix: pass resume=True (--resume) to "
                "continue it, overwrite=True (--overwrite) to start again, or set another output_dir."
            )
        if d.main:
            self.out.mkdir(parents=True, exist_ok=True)
            for stale in self.out.glob(".*.tmp-*"):  # leftovers of a write killed mid-way
                with contextlib.suppress(OSError):
                    stale.unlink()

    # ---- setup ------------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg, dev = self.cfg, self.device
        seed_all(cfg.seed)
        _set_determinism(cfg.deterministic, dev, cfg.quirk("cudnn"))
        self.data = training_sets(cfg, self.data_root, self.verbose)
        self.classes = self.data["classes"]
        self.num_classes = len(self.classes)
        self.selector, train_sketches = make_selector(cfg, self.data, self.verbose)
        self.loader = paired_loader_from_config(
            cfg, train_sketches, self.data["photo"], seed=cfg.seed, base_affine=affine_from_config(cfg)
        )
        model = build_model(cfg, self.num_classes).to(dev)
        if cfg.head_init == "probe" and self.resume_ckpt is None:  # a resumed run restores its head
            t = time.perf_counter()
            info = probe_head(cfg, model, train_sketches, self.data["photo"], dev, progress=self.verbose)
            _say(
                f"head_init=probe: hashing layer and classifier fitted on frozen features ({cfg.probe_steps} "
                f"steps, {time.perf_counter() - t:.0f}s; KD head refitted, relative error "
                f"{info['kd_fit_rel_error']:.1e})",
                self.verbose,
            )
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        inputs = step_inputs(cfg, self.classes, model.feature_dim, dev)
        if inputs.note:
            _say(inputs.note, self.verbose)
        self.teacher, self.cid, self.memory, self.use_kd = inputs[:4]
        self.hooks = step_hooks(self.d, self.memory)
        self.optimizer = make_optimizer(model, cfg)
        self.amp = amp_policy(cfg.amp, dev)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp.scaler)
        self.net: nn.Module = wrap_ddp(
            model, self.d, dev, find_unused=not (self.use_kd and cfg.use_contrastive)
        )

    def _record_run(self, resumed: bool) -> None:
        """config.json and environment.json in the run folder (the environment also goes into checkpoints)."""
        self.environment = environment_record() if self.d.main else {}
        if self.d.main:
            atomic_write_text(self.out / CONFIG_JSON, self.cfg.to_json())
            self.environment = write_environment(self.out, self.environment, resumed=resumed)

    def _restore(self, ckpt: dict[str, Any]) -> None:
        restore_training_state(
            ckpt, model=self.model, optimizer=self.optimizer, scaler=self.scaler, memory=self.memory
        )
        pos = ckpt["position"]
        self.start_epoch, self.start_batch = int(pos["epoch"]), int(pos["batch"])
        self.opt_step, self.batches_seen = int(pos["opt_step"]), int(pos["batches_seen"])
        self.elapsed_before = float(pos["elapsed"])
        self.best_metric, self.best_epoch = ckpt["best"]["metric"], ckpt["best"]["epoch"]
        self.history = json.loads(ckpt["history"])
        _say(
            f"resumed from {self.last_path}: epoch {self.start_epoch + 1}, batch {self.start_batch}, "
            f"optimiser step {self.opt_step}",
            self.verbose,
        )

    def elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self.t0)

    # ---- run --------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg = self.cfg
        self._build()
        self.history: list[dict[str, Any]] = []
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.start_epoch = self.start_batch = self.opt_step = self.batches_seen = 0
        self.elapsed_before = 0.0
        self.stopped = "completed"
        if self.resume_ckpt is not None:
            self._restore(self.resume_ckpt)
            self.stopped = str(self.resume_ckpt.get("stopped", "completed"))
            if self.resume_ckpt["position"].get("finished") and self.stopped == "completed":
                return self._result()
        self.stopped = "completed"
        if cfg.max_train_seconds and self.elapsed_before >= cfg.max_train_seconds:
            _say(
                f"resume: the time budget max_train_seconds={cfg.max_train_seconds:.0f} is already spent "
                f"({self.elapsed_before:.0f}s); raise it to train on",
                self.verbose,
            )
            self.stopped = "time budget"
            return self._result()
        self._record_run(resumed=self.resume_ckpt is not None)
        rng_to_restore = self.resume_ckpt["rng"] if self.resume_ckpt is not None else None
        self.resume_ckpt = None
        steps, accum = len(self.loader), cfg.grad_accum_steps
        self.total_opt = math.ceil(steps / accum) * cfg.epochs
        self.t0 = time.perf_counter()
        _say(
            f"training {cfg.backbone}"
            f"{f' (first {cfg.frozen_stages} stages frozen, stem counted)' if cfg.frozen_stages else ''}"
            f" on {cfg.dataset}: {self.num_classes} classes, {cfg.epochs} epochs x "
            f"{steps} batches ({cfg.sketches_per_batch} sketches + {cfg.photos_per_batch} photos"
            f"{f', accumulated x{accum}' if accum > 1 else ''}), device {self.device}"
            f"{f' x{self.d.world} ranks' if self.d.enabled else ''}, AMP "
            f"{self.amp.dtype if self.amp.enabled else 'off'}; KD {'on' if self.use_kd else 'off'}; "
            f"selection: {self.selector.desc}; output {self.out}",
            self.verbose,
        )
        self.first_log_done = self.batches_seen > 0
        for epoch in range(self.start_epoch, cfg.epochs):
            start_batch = min(self.start_batch, steps) if epoch == self.start_epoch else 0
            done = self._train_epoch(epoch, start_batch, rng_to_restore)
            rng_to_restore = None
            self._end_epoch(epoch, done)
            if self.stopped != "completed":
                break
        return self._result()

    def _train_epoch(self, epoch: int, start_batch: int, rng: dict[str, Any] | None) -> int:
        """Batches ``start_batch, ...`` of ``epoch``: the number of batches done when it stops (all of them
        unless the time budget ran out)."""
        cfg, steps = self.cfg, len(self.loader)
        self.loader.set_epoch(epoch)
        if start_batch == 0 and self.memory is not None and cfg.memory_flush == "epoch":
            self.memory.flush()
        self.net.train()
        iterator = iter(self.loader)
        for _ in range(start_batch):  # data position of a resumed run: same batches, same order
            next(iterator)
        if rng is not None:
            set_rng_state(rng)
        bar = None
        if self.verbose:
            # disable=None: no bar in a log or a pipe (its redraws would read as lines there)
            bar = tqdm(
                total=steps,
                initial=start_batch,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                leave=False,
                dynamic_ncols=True,
                disable=None,
            )
        sums: dict[str, float] = {}
        count, t_log, b = 0, time.perf_counter(), start_batch
        self.optimizer.zero_grad(set_to_none=True)
        try:
            for b in range(start_batch, steps):
                boundary = (b + 1) % cfg.grad_accum_steps == 0 or b == steps - 1
                for k, v in self._micro_step(next(iterator), epoch, b, boundary).items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                if bar is not None:
                    bar.update(1)
                if not boundary:
                    continue
                last = b == steps - 1
                if count >= cfg.log_every or last or not self.first_log_done:
                    row = self._log_row(epoch, b, sums, count, time.perf_counter() - t_log)
                    if not self.first_log_done:
                        self.first_log_done = True
                        self._first_log(row, epoch, b, steps)
                    if bar is not None:
                        bar.set_postfix({k: f"{row[k]:.3f}" for k in ("loss", "loss_ce", "acc") if k in row})
                    sums, count, t_log = {}, 0, time.perf_counter()
                if cfg.checkpoint_every and self.opt_step % cfg.checkpoint_every == 0 and not last:
                    self._save(epoch, b + 1)
                if cfg.max_train_seconds:  # every rank stops at the same batch
                    over = self.elapsed() >= cfg.max_train_seconds
                    if any_over_ranks(over, self.d, self.device):
                        self.stopped = "time budget"
                        break
        finally:
            if bar is not None:
                bar.close()
        if count:
            self._log_row(epoch, b, sums, count, time.perf_counter() - t_log)
        return b + 1 if self.stopped != "completed" else steps

    def _micro_step(self, batch: dict[str, Any], epoch: int, b: int, boundary: bool) -> dict[str, float]:
        """One micro-batch: set the lr, forward, stop on a non-finite loss, backward; at an accumulation
        boundary, the optimiser step. Returns the logged values (terms, total, acc)."""
        cfg = self.cfg
        factor = lr_factor(cfg, epoch, self.opt_step, self.total_opt, self.elapsed())
        for g in self.optimizer.param_groups:
            g["lr"] = cfg.lr * g.get("lr_mult", 1.0) * factor
        # DDP: gradients are averaged over ranks only at the accumulation boundary
        sync = self.net.no_sync() if (self.d.enabled and not boundary) else contextlib.nullcontext()
        with sync:
            total, logged, terms, acc = self._step_losses(batch)
            values = {k: float(v.detach().item()) for k, v in terms.items()}
            values["total"] = float(logged.detach().item())
            bad = [k for k, v in values.items() if not math.isfinite(v)]
            if len(bad) > 1:
                bad = [k for k in bad if k != "total"]
            if any_over_ranks(bool(bad), self.d, self.device):
                self._diverged(epoch, b, bad, values)
            self.scaler.scale(total / cfg.grad_accum_steps).backward()
        self.batches_seen += 1
        if boundary:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.opt_step += 1
        return {**values, "acc": acc}

    def _step_losses(
        self, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], float]:
        """(loss to back-propagate, total to log, unweighted terms, accuracy) of one micro-batch.

        The step itself is :func:`dsn_lab.step.dsn_step`; DDP joins it through ``self.hooks``.
        """
        cfg = self.cfg
        res = dsn_step(
            self.net,
            slice_batch(batch, self.d),
            cfg.replace(use_kd=self.use_kd),
            teacher=self.teacher,
            memory=self.memory,
            cid_mask=self.cid,
            autocast_dtype=self.amp.dtype,
            hooks=self.hooks,
        )
        total = res.total
        if self.d.enabled and "contrastive" in res.terms:
            # gradient flows only through this rank's rows; DDP averages over ranks, so scale by the world
            # size to get the gradient of the whole-batch SupCon (the value logged stays unscaled)
            total = total + (self.d.world - 1) * cfg.w_contrastive * res.terms["contrastive"]
        acc = float((res.logits.argmax(1) == res.labels).float().mean().item())
        return total, res.total, dict(res.terms), acc

    def _end_epoch(self, epoch: int, done: int) -> None:
        """Validate, record and checkpoint after ``done`` batches of ``epoch``."""
        cfg, steps = self.cfg, len(self.loader)
        stop = self.stopped != "completed"
        row = {
            "kind": "epoch",
            "epoch": epoch + (done / steps),
            "step": self.opt_step,
            "elapsed": self.elapsed(),
        }
        val = self._validate(epoch + 1)
        is_best = val.pop("is_best")
        row.update(val)
        row["best"] = self.best_metric
        self.history.append(row)
        metric = row.get(self.selector.name)
        _say(
            f"epoch {epoch + 1}/{cfg.epochs}"
            + (
                f" (stopped at batch {done}/{steps}: time budget {cfg.max_train_seconds:.0f}s)"
                if stop
                else ""
            )
            + (f": {self.selector.name} {metric:.4f}" if metric is not None else "")
            + (" (best)" if is_best else "")
            + f", elapsed {_fmt_seconds(self.elapsed())}",
            self.verbose,
        )
        if stop:
            _say(
                f"WARNING: max_train_seconds={cfg.max_train_seconds:g} stopped training at optimiser "
                f"step {self.opt_step} of {self.total_opt}: a shorter run than configured, so its numbers "
                "are not comparable with a complete run. Raise max_train_seconds (or unset it) to train on.",
                self.verbose,
            )
            self._save(epoch, done, best=is_best)
        else:
            self._save(epoch + 1, 0, finished=epoch == cfg.epochs - 1, best=is_best)

    def _validate(self, epoch: int) -> dict[str, Any]:
        row: dict[str, Any] = {}
        value = float("nan")
        if self.d.main:
            self.model.eval()
            t = time.perf_counter()
            self.selector.epoch = epoch  # paired rules that redraw their pairs draw this epoch's
            try:
                row.update(self.selector(self.model, self.device))
                for cb in self.callbacks:
                    row.update({k: v for k, v in (cb(self.model, epoch, self.opt_step) or {}).items()})
            finally:
                self.model.train()
            row["eval_seconds"] = time.perf_counter() - t
            value = float(row.get(self.selector.name, float("nan")))
        barrier(self.d)
        value = broadcast_float(value, self.d, self.device)
        if self.rule.keep == "last":  # released TU-Berlin: model_best.pth.tar is written every epoch
            self.best_metric, self.best_epoch = (value if math.isfinite(value) else None), epoch
            return {**row, "is_best": True}
        is_best = math.isfinite(value) and (self.best_metric is None or value > self.best_metric)
        if is_best:
            self.best_metric, self.best_epoch = value, epoch
        return {**row, "is_best": is_best}

    def _save(self, epoch: int, batch: int, *, finished: bool = False, best: bool = False) -> None:
        if not self.d.main:
            return
        payload = training_payload(
            self.cfg,
            classes=self.classes,
            model=self.model,
            optimizer=self.optimizer,
            scaler=self.scaler,
            memory=self.memory,
            position={
                "epoch": int(epoch),
                "batch": int(batch),
                "opt_step": int(self.opt_step),
                "batches_seen": int(self.batches_seen),
                "elapsed": float(self.elapsed()),
                "finished": finished,
            },
            best={"metric": self.best_metric, "epoch": self.best_epoch, "name": self.selector.name},
            history=self.history,
            stopped=self.stopped,
            environment=getattr(self, "environment", {}),
        )
        save_checkpoint(payload, self.last_path)
        if best:
            save_checkpoint(payload, self.best_path)
        _write_history(self.out, self.history)

    # ---- logs -------------------------------------------------------------------------------------
    def _log_row(
        self, epoch: int, b: int, sums: dict[str, float], count: int, seconds: float
    ) -> dict[str, Any]:
        means = mean_over_ranks({k: v / count for k, v in sums.items()}, self.d, self.device)
        row: dict[str, Any] = {
            "kind": "step",
            "epoch": epoch + (b + 1) / len(self.loader),
            "step": self.opt_step,
            "batch": b + 1,
        }
        row["loss"] = means.pop("total")
        row["acc"] = means.pop("acc")
        for k, v in means.items():
            row[f"loss_{k}"] = v
        for g in self.optimizer.param_groups:
            row["lr" if g.get("name") in ("head", None) else f"lr_{g['name']}"] = g["lr"]
        row["time_per_step"] = seconds / max(count, 1)
        if self.memory is not None:
            row["memory_used"] = self.memory.used_fraction()
        self.history.append(row)
        return row

    def _first_log(self, row: dict[str, Any], epoch: int, b: int, steps: int) -> None:
        per_step = self.elapsed() / max(self.batches_seen, 1)
        remaining = (self.cfg.epochs * steps) - (epoch * steps + b + 1)
        eta = remaining * per_step
        if self.cfg.max_train_seconds:
            eta = min(eta, max(self.cfg.max_train_seconds - self.elapsed(), 0.0))
        terms = ", ".join(f"{k[5:]} {v:.3f}" for k, v in row.items() if k.startswith("loss_"))
        _say(
            f"first step: {per_step:.2f} s/batch measured ({row['time_per_step']:.2f} s in the last "
            f"{self.cfg.log_every if self.batches_seen > 1 else 1}); ETA {_fmt_seconds(eta)} for "
            f"{remaining} more batches; loss {row['loss']:.3f} ({terms}), acc {row['acc']:.3f}",
            self.verbose,
        )

    def _diverged(self, epoch: int, b: int, bad: list[str], values: dict[str, float]) -> None:
        if self.d.main:
            self.history.append(
                {
                    "kind": "diverged",
                    "epoch": epoch + (b + 1) / len(self.loader),
                    "step": self.opt_step,
                    "batch": b + 1,
                    "terms": ",".join(bad),
                    **{f"loss_{k}": v for k, v in values.items()},
                }
            )
            _write_history(self.out, self.history)
        names = ", ".join(f"'{k}' = {values.get(k, float('nan'))}" for k in bad) or "'total'"
        have = (
            f"the last good checkpoint is {self.last_path}"
            if self.last_path.is_file()
            else "no checkpoint was written yet (set checkpoint_every to write them more often)"
        )
        raise TrainingDivergedError(
            f"Loss term {names} is not finite at epoch {epoch + 1}, batch {b + 1} (optimiser step "
            f"{self.opt_step}); training stopped before that update, and {have}. Fix: lower lr, check the "
            "data of this batch, or turn AMP off (amp=False); resume=True continues from the checkpoint."
        )

    def _result(self) -> TrainResult:
        return TrainResult(
            output_dir=self.out,
            final_checkpoint=self.last_path,
            best_checkpoint=self.best_path if self.best_path.is_file() else None,
            history=self.history,
            best_metric=self.best_metric,
            best_epoch=self.best_epoch,
            selection=self.selector.name,
            stopped=self.stopped,
            planned_steps=math.ceil(len(self.loader) / self.cfg.grad_accum_steps) * self.cfg.epochs,
            num_classes=self.num_classes,
            classes=list(self.classes),
        )


# ---------------------------------------------------------------------------------------------------
