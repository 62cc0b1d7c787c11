"""What the course notebooks run, as functions: so a notebook cell is one call, and the call is tested.

- :func:`pick_device`: the torch device of a notebook (CUDA when there is one), seeded, with a share of the
  CPU threads;
- :func:`preset_config`: a preset with its data (EmojiSketch built on first use) and the run folder;
- :func:`train_live`: :func:`dsn_lab.train.train` with loss curves redrawn in the notebook while it runs;
- :func:`train_until_killed`: a training process killed after its first checkpoint (a Colab disconnect, for
  notebook 03 to resume from);
- :func:`run_folder` and :func:`ensure_run`: one run per configuration, shared by the notebooks: the folder
  is named after the configuration, so whichever notebook asks first trains it and the others reuse it;
- :func:`run_ablations` and :func:`ablation_table`: a ladder of config changes, each trained, evaluated on the
  unseen classes with :func:`dsn_lab.embed.evaluate_checkpoint`, and summarised over seeds (notebook 05;
  :func:`dsn_lab.plots.plot_ablations` draws it);
- :func:`paper_table`: the published numbers (:data:`dsn_lab.embed.PAPER_RESULTS`) as a table.

This module sits at the top of the package, beside ``cli`` and ``demo``: nothing in ``dsn_lab`` imports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from dsn_lab import plots
from dsn_lab._atomic import atomic_write_text
from dsn_lab.analysis import DomainGapCallback
from dsn_lab.checkpoint import LAST_NAME, RESUME_IGNORED_FIELDS, checkpoint_config, load_checkpoint
from dsn_lab.config import DSNConfig, get_preset
from dsn_lab.data import EMOJISKETCH_VERSIONS, get_dataset, is_emojisketch
from dsn_lab.data.emojisketch import ensure_emojisketch
from dsn_lab.data.transforms import eval_transform
from dsn_lab.embed import PAPER_RESULTS, evaluate_checkpoint
from dsn_lab.train import HISTORY_JSON, Callback, TrainResult, load_history, train

#: The metric columns of :func:`run_ablations` rows (the default protocol of ``evaluate_retrieval``).
ABLATION_METRICS = ("mAP@all", "P@100")


# ---------------------------------------------------------------------------------------------------
# device and config
# ---------------------------------------------------------------------------------------------------
def pick_device(seed: int | None = 0, *, max_threads: int = 4, verbose: bool = True) -> torch.device:
    """CUDA when available, else the CPU with at most ``max_threads`` threads; seeds torch with ``seed``.

    Why a thread cap: on a shared CPU more threads than cores slow every process down (tests/conftest.py
    measured it); a value set before (``OMP_NUM_THREADS``, or a test worker's share) is not raised.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if seed is not None:
        torch.manual_seed(seed)
    if device.type == "cpu":
        torch.set_num_threads(max(1, min(max_threads, os.cpu_count() or 1, torch.get_num_threads())))
    if verbose:
        print("device:", device, "| torch", torch.__version__, "| threads", torch.get_num_threads())
    return device


def preset_config(
    preset: str,
    *,
    variant: str = "tiny",
    output_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    **overrides: Any,
) -> DSNConfig:
    """``get_preset(preset, **overrides)`` with its data: an ``emoji*`` preset gets EmojiSketch ``variant``
    (built on first use, :func:`~dsn_lab.data.emojisketch.ensure_emojisketch`) as ``data_root``; other
    presets keep theirs (notebook 01 installs those datasets). ``output_dir`` is the run folder."""
    if output_dir is not None:
        overrides["output_dir"] = str(output_dir)
    cfg = get_preset(preset, **overrides)
    if is_emojisketch(cfg.dataset) and "data_root" not in overrides:
        version = EMOJISKETCH_VERSIONS[cfg.dataset]
        cfg = cfg.replace(
            data_root=str(ensure_emojisketch(variant=variant, progress=progress, version=version))
        )
    return cfg


# ---------------------------------------------------------------------------------------------------
# training with live curves
# ---------------------------------------------------------------------------------------------------
# The training thread of each run folder, so that a re-run cell waits for the run an interrupted cell left
# going (a thread cannot be stopped from outside) instead of training the same folder twice at once.
_LIVE: dict[str, threading.Thread] = {}


def _show_in_notebook(fig: Any, status: str) -> None:
    """Replace the cell's output by ``fig`` and ``status``; outside IPython, print the status only."""
    try:  # IPython is there in any notebook kernel; a plain Python session prints
        from IPython import get_ipython
        from IPython.display import clear_output, display
    except ImportError:
        get_ipython = None
    if get_ipython is None or get_ipython() is None:
        print(status, flush=True)
        return
    clear_output(wait=True)
    display(fig)
    print(status)


def _step_rows(history: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in history if r.get("kind") == "step"]


def _curves(history: Sequence[dict[str, Any]], save_to: str | os.PathLike[str] | None = None) -> Any:
    """A run's curves: the step rows and the epoch rows (validation), in :func:`plots.run_curve_panels`."""
    rows = [r for r in history if r.get("kind") in ("step", "epoch")]
    panels = plots.run_curve_panels({k for r in rows for k in r}) or None  # None: grouped by name
    return plots.plot_training_curves(rows, panels=panels, save_to=save_to)


def train_live(
    cfg: DSNConfig,
    *,
    device: str | torch.device | None = None,
    resume: bool = True,
    refresh_s: float = 5.0,
    callbacks: Sequence[Callback] = (),
    save_to: str | os.PathLike[str] | None = None,
    show: Callable[[Any, str], None] | None = None,
) -> TrainResult:
    """Train ``cfg`` (``resume=True``: from ``last.pt`` when there is one) while drawing its loss curves.

    :func:`~dsn_lab.train.train` runs in a background thread; this thread redraws the curves from the run's
    ``history.json`` (written with every checkpoint) every ``refresh_s`` seconds, and once more from the
    result at the end (saved to ``save_to`` when given). ``show(figure, status)`` draws; the default
    replaces the cell's output in a notebook and prints the status elsewhere. An error in training is raised
    here. Interrupting the cell stops the drawing, not the training thread; calling again for the same
    run folder first waits for that thread.
    """
    show = show or _show_in_notebook
    out = Path(cfg.output_dir).expanduser().resolve()
    previous = _LIVE.get(str(out))
    if previous is not None and previous.is_alive():
        print(f"waiting for the training of {out} that an interrupted cell left running ...", flush=True)
        previous.join()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = train(cfg, resume=resume, device=device, callbacks=callbacks, verbose=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread, raised there
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=f"dsn_lab-train-{out.name}", daemon=True)
    _LIVE[str(out)] = thread
    t0 = time.perf_counter()
    thread.start()
    while thread.is_alive():
        thread.join(timeout=refresh_s)
        if not thread.is_alive() or not (out / HISTORY_JSON).is_file():
            continue
        try:
            history = load_history(out)
        except (OSError, ValueError):  # written atomically, but a reader may still race a replace on some OS
            continue
        steps = _step_rows(history)
        if steps:
            last = steps[-1]
            show(
                _curves(history),
                f"{time.perf_counter() - t0:.0f} s, epoch {last['epoch']:.2f}, loss {last['loss']:.3f}",
            )
    if "error" in outcome:
        raise outcome["error"]
    result: TrainResult = outcome["result"]
    if _step_rows(result.history):
        fig = _curves(result.history, save_to=save_to)
        seconds = time.perf_counter() - t0
        best = f"best {result.selection} = {result.best_metric} at epoch {result.best_epoch}"
        show(fig, f"finished ({result.stopped}) in {seconds:.0f} s; {best}")
    return result


# ---------------------------------------------------------------------------------------------------
# a disconnect, simulated
# ---------------------------------------------------------------------------------------------------
# The child records the gap as ensure_run does, so the epoch it finishes before the kill has its row too.
_CHILD = (
    "import json, sys\n"
    "from pathlib import Path\n"
    "from dsn_lab.config import DSNConfig\n"
    "from dsn_lab.course import GAP_CODES_DIR, gap_recorder\n"
    "from dsn_lab.train import train\n"
    "cfg = DSNConfig.from_dict(json.loads(open(sys.argv[1], encoding='utf-8').read()))\n"
    "recorder = gap_recorder(cfg, keep_codes_in=Path(cfg.output_dir) / GAP_CODES_DIR)\n"
    "train(cfg, device=sys.argv[2], verbose=False, callbacks=[recorder])\n"
)


def train_until_killed(
    cfg: DSNConfig,
    *,
    device: str | torch.device | None = None,
    timeout_s: float = 3600.0,
    poll_s: float = 0.2,
) -> dict[str, Any] | None:
    """Train ``cfg`` in a child process and kill it (SIGKILL, no clean-up) once it has written ``last.pt``:
    what a Colab disconnect does to a run. Returns ``{"seconds", "returncode", "position"}`` (the position
    the checkpoint holds), or None when the run folder already has a ``last.pt`` (nothing is started).

    A child that fails before its first checkpoint raises RuntimeError with the end of its error output;
    one still without a checkpoint after ``timeout_s`` is killed and reported the same way (an hour by
    default: a full run's first epoch on a busy 2-core CPU took over ten minutes).
    """
    out = Path(cfg.output_dir).expanduser()
    last = out / LAST_NAME
    if last.exists():
        return None
    out.mkdir(parents=True, exist_ok=True)
    request = atomic_write_text(out / "config-request.json", cfg.to_json())
    dev = str(device) if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    log = out / "killed-attempt.log"
    t0 = time.perf_counter()
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(request), dev], stderr=err)
        try:
            while not last.exists() and proc.poll() is None and time.perf_counter() - t0 < timeout_s:
                time.sleep(poll_s)
        finally:
            if proc.poll() is None:
                proc.kill()  # SIGKILL on POSIX: no clean-up, as a lost runtime
            proc.wait()
    seconds = time.perf_counter() - t0
    if not last.exists():
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
        timed_out = seconds >= timeout_s
        why = f"no checkpoint after {timeout_s:.0f} s" if timed_out else f"exit code {proc.returncode}"
        raise RuntimeError(
            f"the training process for {out} stopped before its first checkpoint ({why}). Its last lines "
            f"({log}):\n" + "\n".join(tail)
        )
    return {"seconds": seconds, "returncode": proc.returncode, "position": load_checkpoint(last)["position"]}


# ---------------------------------------------------------------------------------------------------
# one run per configuration, shared by the notebooks
# ---------------------------------------------------------------------------------------------------
#: Images per domain the domain gap is measured on at each epoch end of a course run (notebook 06 reads it).
GAP_SAMPLES = 500
#: The folder of a course run where its recorder keeps each epoch's codes (``analysis.load_gap_codes``).
GAP_CODES_DIR = "gap_codes"


def run_folder(cfg: DSNConfig, runs_dir: str | os.PathLike[str]) -> Path:
    """The run folder of ``cfg`` in ``runs_dir``: ``<preset>-<losses>-seed<seed>-<key>``.

    ``key`` is a digest of the fields that make the run what it is: those that differ from the
    :class:`~dsn_lab.config.DSNConfig` defaults, less the ones a resume also ignores (output folder, logging
    and checkpoint intervals, ...), plus the name of the data folder (EmojiSketch ``-tiny`` or full). So the
    same configuration gets the same folder whichever notebook asks, and any other change gets a new one
    instead of a clash with a finished run. ``losses`` (``dsn``, ``ce-kd``, ``ce-kd-supcon``,
    ``ce-kd-memory``) only makes the name readable.
    """
    changed = {k: mine for k, (mine, _) in cfg.diff(DSNConfig(), ignore=RESUME_IGNORED_FIELDS).items()}
    changed["data folder"] = Path(cfg.data_root).name
    key = hashlib.sha1(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:8]
    if cfg.use_contrastive and cfg.use_memory:
        losses = "dsn"
    else:
        losses = "-".join(
            ["ce-kd", *(["supcon"] if cfg.use_contrastive else []), *(["memory"] if cfg.use_memory else [])]
        )
    return Path(runs_dir).expanduser() / f"{cfg.preset or 'custom'}-{losses}-seed{cfg.seed}-{key}"


def gap_recorder(
    cfg: DSNConfig, max_samples: int = GAP_SAMPLES, keep_codes_in: str | os.PathLike[str] | None = None
) -> DomainGapCallback:
    """The training callback of every :func:`ensure_run`: the domain gap of the unseen classes
    (:class:`~dsn_lab.analysis.DomainGapCallback`, ``gap/...`` history columns) at each epoch end, on a fixed,
    seeded subset of ``max_samples`` images per domain. Recorded whichever notebook trains the run, so
    notebook 06 finds the curves in a run notebook 03 or 05 trained; call it on a model for its row.
    ``keep_codes_in`` also keeps each epoch's codes there (:func:`ensure_run`: ``<run folder>/gap_codes``),
    for notebook 06's maps of the gap over training."""
    tf = eval_transform(cfg.image_size)
    data = {
        domain: get_dataset(
            cfg.dataset, cfg.data_root, split="zero", domain=domain, transform=tf, verbose=False
        )
        for domain in ("sketch", "photo")
    }
    return DomainGapCallback(
        data["sketch"], data["photo"], max_samples=max_samples, seed=0, keep_codes_in=keep_codes_in
    )


def _finished(folder: Path) -> bool:
    """True when ``folder/last.pt`` is the checkpoint of a run that completed (nothing left to train)."""
    last = folder / LAST_NAME
    if not last.is_file():
        return False
    ckpt = load_checkpoint(last)
    return bool(ckpt["position"].get("finished")) and str(ckpt.get("stopped", "completed")) == "completed"


def _use_checkpoint(cfg: DSNConfig, checkpoint: str | os.PathLike[str], device: Any) -> TrainResult:
    """The finished run that ``checkpoint`` (a run folder, or a ``.pt`` file in one) belongs to; a file
    given is the one the result points at as its best checkpoint. Trains nothing."""
    path = Path(checkpoint).expanduser()
    folder = path if path.is_dir() else path.parent
    if not path.exists() or not (folder / LAST_NAME).is_file():
        raise FileNotFoundError(
            f"CHECKPOINT = {str(checkpoint)!r}: no run there (expected a run folder with {LAST_NAME}, or a "
            ".pt file inside one). Fix: set CHECKPOINT to such a path, or to None to use the shared run."
        )
    if not _finished(folder):
        raise RuntimeError(
            f"CHECKPOINT = {str(checkpoint)!r}: the run in {folder} is not finished. Fix: finish it (train "
            "its config with resume=True, e.g. in notebook 03), or set CHECKPOINT = None."
        )
    saved = checkpoint_config(load_checkpoint(folder / LAST_NAME))
    # its own config (another machine's data path replaced by this one's): a finished run returns at once
    result = train(
        saved.replace(output_dir=str(folder), data_root=cfg.data_root),
        resume=True,
        device=device,
        verbose=False,
    )
    if path.is_file():
        result.best_checkpoint = path
    return result


def ensure_run(
    cfg: DSNConfig,
    runs_dir: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    live: bool = False,
    refresh_s: float = 5.0,
    save_to: str | os.PathLike[str] | None = None,
    verbose: bool = True,
) -> TrainResult:
    """The finished run of ``cfg``: trained only when :func:`run_folder` has none yet.

    A finished run is returned without training (``train(..., resume=True)`` returns at once; with
    ``live=True`` its final curves are drawn, and saved to ``save_to``); a run a
    disconnect cut off is finished; a missing one is trained, with :func:`gap_recorder` at each epoch end and,
    with ``live=True``, the curves of :func:`train_live` (``refresh_s``, ``save_to``). ``checkpoint``: use
    that run instead (a run folder or a ``.pt`` file in one, e.g. a full run on Drive); nothing is trained,
    and ``cfg`` only supplies this machine's data path.
    """
    if checkpoint is not None:
        result = _use_checkpoint(cfg, checkpoint, device)
        if verbose:
            print(f"using the run given as CHECKPOINT: {result.output_dir} (nothing trained)")
        return result
    folder = run_folder(cfg, runs_dir)
    cfg = cfg.replace(output_dir=str(folder))
    if _finished(folder):
        if verbose:
            print(f"reusing the finished run {folder} (nothing trained)")
        result = train(cfg, resume=True, device=device, verbose=False)
        if live:  # the curves its training ended with, drawn (and saved) again
            best = f"best {result.selection} = {result.best_metric} at epoch {result.best_epoch}"
            _show_in_notebook(_curves(result.history, save_to=save_to), f"reused {folder.name}; {best}")
        return result
    if verbose:
        state = "continuing the unfinished" if (folder / LAST_NAME).is_file() else "training the missing"
        print(f"{state} run {folder}", flush=True)
    callbacks = [gap_recorder(cfg, keep_codes_in=folder / GAP_CODES_DIR)]
    if live:
        return train_live(cfg, device=device, refresh_s=refresh_s, callbacks=callbacks, save_to=save_to)
    return train(cfg, resume=True, device=device, callbacks=callbacks, verbose=False)


# ---------------------------------------------------------------------------------------------------
# ablations
# ---------------------------------------------------------------------------------------------------
def run_ablations(
    base: DSNConfig,
    ablations: Mapping[str, Mapping[str, Any]],
    runs_dir: str | os.PathLike[str],
    *,
    seeds: Sequence[int] = (1,),
    device: str | torch.device | None = None,
    verbose: bool = True,
) -> pd.DataFrame:
    """Train every ``(name, config changes)`` of ``ablations`` on top of ``base`` for every seed and score
    it on the unseen classes; one row per run: ``run, seed, mAP@all, P@100, train seconds, checkpoint``.

    Each run is :func:`ensure_run`'s: its folder in ``runs_dir`` is named after its configuration
    (:func:`run_folder`), so a run another notebook trained (notebook 03's full DSN, 06's baseline) is only
    evaluated, and so is a finished row of an earlier call; a cut-off ladder continues where it stopped.
    Each run is scored with :func:`~dsn_lab.embed.evaluate_checkpoint` on its best checkpoint (the last one
    when the run selects none): real-valued codes, the default protocol.
    """
    if not ablations or not seeds:
        raise ValueError("run_ablations needs at least one ablation and one seed")
    plan = [(name, seed) for name in ablations for seed in seeds]
    rows = []
    for name, seed in tqdm(plan, desc="ablations", unit="run", disable=not verbose):
        cfg = base.replace(seed=seed, **ablations[name])
        t0 = time.perf_counter()
        result = ensure_run(cfg, runs_dir, device=device, verbose=False)
        seconds = time.perf_counter() - t0
        checkpoint = result.best_checkpoint or result.final_checkpoint
        scores = evaluate_checkpoint(checkpoint, device=device, binary=False, progress=False)["real"]
        rows.append(
            {
                "run": name,
                "seed": seed,
                **{m: scores[m] for m in ABLATION_METRICS},
                "train seconds": seconds,
                "checkpoint": str(checkpoint),
            }
        )
        if verbose:
            shown = "  ".join(f"{m} {scores[m]:.4f}" for m in ABLATION_METRICS)
            tqdm.write(f"{name:28s} seed {seed}: {shown}  ({seconds:.0f} s, {result.output_dir.name})")
    return pd.DataFrame(rows)


def ablation_table(runs: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean and standard deviation over seeds of every :func:`run_ablations` metric, one row per run, in
    ``order`` (default: the order of the rows). The std is NaN for a run with one seed."""
    missing = [c for c in ("run", *ABLATION_METRICS) if c not in runs.columns]
    if missing:
        raise KeyError(f"ablation_table: columns {missing} missing; expected the frame run_ablations returns")
    columns = [c for c in (*ABLATION_METRICS, "train seconds") if c in runs.columns]
    table = runs.groupby("run", sort=False)[columns].agg(["mean", "std"])
    if order is not None:
        unknown = [r for r in order if r not in table.index]
        if unknown:
            raise KeyError(f"ablation_table: runs {unknown} are not in the results ({list(table.index)})")
        table = table.loc[list(order)]
    return table


# ---------------------------------------------------------------------------------------------------
# a QUICK run beside the committed full run
# ---------------------------------------------------------------------------------------------------
def beside_full_run(
    this: Mapping[str, Any], full: Mapping[str, Any] | None, keys: Sequence[str], *, quick: bool = True
) -> pd.DataFrame:
    """``keys`` of this run's result and of the committed full run's (``Workspace.full_run_result``), side
    by side and labelled which is which; the full column is left out when there is none (no clone) or when
    this run is the full run (``quick=False``)."""
    missing = [k for k in keys if k not in this]
    if missing:
        raise KeyError(f"beside_full_run: {missing} are not in this run's result ({list(this)})")
    columns = {"this run (QUICK)" if quick else "this run (full)": [this[k] for k in keys]}
    if quick and full is not None:
        columns["full run (committed results/)"] = [full.get(k, float("nan")) for k in keys]
    return pd.DataFrame(columns, index=list(keys))


# ---------------------------------------------------------------------------------------------------
# the published numbers
# ---------------------------------------------------------------------------------------------------
def paper_table(datasets: Iterable[str] | None = None) -> pd.DataFrame:
    """The published zero-shot results the package records (:data:`dsn_lab.embed.PAPER_RESULTS`): columns
    ``method, benchmark, mAP@all, P@100``; ``datasets`` selects benchmarks (default: all)."""
    names = list(PAPER_RESULTS) if datasets is None else list(datasets)
    unknown = [n for n in names if n not in PAPER_RESULTS]
    if unknown:
        raise KeyError(f"no published results for {unknown}; the package has {sorted(PAPER_RESULTS)}")
    return pd.DataFrame(
        [
            {"method": method, "benchmark": name, **values}
            for name in names
            for method, values in PAPER_RESULTS[name].items()
        ]
    )
