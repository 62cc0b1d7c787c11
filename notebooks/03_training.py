# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dsn-lab/dsn-lab/blob/main/notebooks/03_training.ipynb)
#
# # 03 · Training: a run from a preset, live curves, surviving a disconnect
#
# One call trains DSN: `dsn_lab.train.train(cfg)`. The loop (AMP, gradient accumulation, DDP under
# `torchrun`) writes `last.pt` at every epoch end and every `checkpoint_every` optimiser steps, and
# `best.pt` at the best validation score; a checkpoint holds everything needed to continue *exactly*
# (model, optimiser, memory bank, RNG states, data position, history).
#
# **What you should see**
#
# 1. the configuration of the preset, and where the checkpoints go (Google Drive on Colab when asked);
# 2. a run that is killed part-way — what a Colab disconnect does;
# 3. the same call with `resume=True` continuing from the last checkpoint, with **live loss curves**;
# 4. the measured time per step and per epoch.
#
# **GPU**: the reproduction presets (`sketchy-s1-released` / `-paper`, `tuberlin-released` / `-paper`)
# need a GPU and the dataset (notebook 01). As released, Sketchy trains 20 epochs × 1,068 steps (seed 1)
# and keeps the epoch with the best paired ITQ mAP of held-out sketch/photo pairs; TU-Berlin trains 16
# epochs (seed 2021) and keeps the last epoch. On a CPU this notebook falls back to the offline `emoji-*`
# presets; with `QUICK = True` the run is a few steps long.

# %% tags=["parameters"]
QUICK = True
PRESET = "emoji-quick" if QUICK else "emoji-demo"  # full: "emoji-demo" (CPU ok) or "sketchy-s1-paper" (GPU)
VARIANT = "tiny" if QUICK else "full"  # EmojiSketch variant (emoji presets only)
OVERRIDES = (
    {
        "steps_per_epoch": 4,
        "epochs": 2,
        "checkpoint_every": 2,
        "log_every": 1,
        "image_size": 64,
        "sketches_per_batch": 4,
        "photos_per_batch": 8,
    }
    if QUICK
    else {"checkpoint_every": 200, "log_every": 10}
)  # full: the preset's values, a checkpoint every 200 steps
SIMULATE_DISCONNECT = True  # kill the first attempt after its first checkpoint
REFRESH_S = 5 if QUICK else 30  # seconds between redraws of the live curves
USE_DRIVE = False  # Colab: runs and figures on Google Drive (they survive a disconnect; 04 finds 03's run)
DRIVE_DIR = "/content/drive/MyDrive/dsn_lab"  # Colab: the folder on Drive (mounted when USE_DRIVE)

# %%
# Setup (explained in 00_setup): install dsn_lab if this kernel lacks it, then decide the folders.
REPOSITORY, VERSION = "https://github.com/dsn-lab/dsn-lab", "0.1.0"
try:
    import dsn_lab.colab
except ImportError:  # pip-install the clone this notebook sits in, else this notebook's version from GitHub
    import subprocess
    import sys
    from pathlib import Path

    pip = [sys.executable, "-m", "pip", "install", "-q"]
    clones = [d for d in (Path.cwd(), *Path.cwd().parents) if (d / "dsn_lab" / "colab.py").is_file()]
    if clones:
        subprocess.check_call([*pip, "-e", str(clones[0])])
        sys.path.insert(0, str(clones[0]))  # an editable install is seen by new processes only
    elif subprocess.call([*pip, f"dsn-lab @ git+{REPOSITORY}@v{VERSION}"]):
        print(f"Tag v{VERSION} is not on {REPOSITORY} (yet): installing the main branch instead.")
        subprocess.check_call([*pip, f"dsn-lab @ git+{REPOSITORY}@main"])
    import dsn_lab.colab

WS = dsn_lab.colab.setup(use_drive=USE_DRIVE, drive_dir=DRIVE_DIR, quick=QUICK)
IN_COLAB, RUNS_DIR, FIG_DIR, fig_path = WS.in_colab, WS.runs, WS.figures, WS.fig_path

# %%
from dsn_lab.course import pick_device

DEVICE = pick_device(seed=0)  # CUDA when there is one; on the CPU, at most 4 threads

# %% [markdown]
# ## 1. Checkpoints on Drive (Colab)
#
# Colab's disk disappears with the runtime. With `USE_DRIVE = True` (parameters cell) the setup cell
# mounted Google Drive and `RUNS_DIR` is on it; after a disconnect, reconnect, run the notebook again,
# and the training cell continues from the last checkpoint. The run folder is `RUNS_DIR/<preset>`
# (`WS.run_dir(PRESET)`): notebooks 04 and 07 look for the run there, so with Drive they use this
# notebook's run instead of training their own. Locally, or without Drive, `runs/` is used.

# %%
print(WS.describe())
print("this run's folder:", WS.run_dir(PRESET))

# %% [markdown]
# ## 2. The configuration
#
# A preset is a `DSNConfig`; `OVERRIDES` changes fields. A paper preset without a GPU is replaced by the
# CPU preset with a message (it would take weeks on a CPU).

# %%
from dsn_lab.course import preset_config

if DEVICE.type == "cpu" and not PRESET.startswith(("emoji", "cpu")):
    print(f"{PRESET} needs a GPU; this machine has none -> using emoji-demo instead.")
    PRESET = "emoji-demo"
cfg = preset_config(PRESET, variant=VARIANT, output_dir=WS.run_dir(PRESET), **OVERRIDES)
print(f"differences from the DSN defaults: {cfg.diff(type(cfg)(), ignore=('notes',))}")
print(f"fidelity fields in force (faithful={cfg.faithful}): {cfg.quirks()}")

# %% [markdown]
# Every optimiser step of the loop runs `dsn_lab.step.dsn_step` — the same step notebook 02 opens with
# `dsn_losses` — on one paired batch; the trainer adds only AMP, DDP, accumulation and fault handling
# around it. Here is the trainer's call:

# %%
import inspect

from dsn_lab.train import _Trainer

print(inspect.getsource(_Trainer._step_losses))

# %% [markdown]
# ## 3. A run that gets cut off
#
# The first attempt runs in a separate Python process, which is killed (`SIGKILL`, no clean-up) as soon
# as it has written a checkpoint — the same as a Colab runtime disconnecting
# (`dsn_lab.course.train_until_killed`; it starts nothing when the run folder already has a checkpoint).
# On a GPU with the full settings, skip this with `SIMULATE_DISCONNECT = False`.

# %%
from dsn_lab.course import train_until_killed

if SIMULATE_DISCONNECT:
    killed = train_until_killed(cfg, device=DEVICE)
    if killed is None:
        print("the run folder already has a checkpoint: nothing to cut off")
    else:
        print(f"attempt 1 killed after {killed['seconds']:.0f} s (exit code {killed['returncode']})")
        print("the last checkpoint says:", killed["position"])

# %% [markdown]
# ## 4. Resume, with live loss curves
#
# `train(cfg, resume=True)` finds `last.pt`, checks that its config matches (a different config is an
# error naming the fields), restores everything and continues at the same batch. The loop writes the
# history (`history.json`) with every checkpoint; `dsn_lab.course.train_live` runs that training in a
# background thread and redraws the curves from the history every `REFRESH_S` seconds. Run the cell
# again after a real disconnect: it continues from wherever the last checkpoint is.

# %%
from dsn_lab.course import train_live

curves = fig_path(f"training_curves_{cfg.preset}")
result = train_live(cfg, device=DEVICE, refresh_s=REFRESH_S, save_to=curves)
print(f"checkpoints: {result.final_checkpoint}, {result.best_checkpoint}")

# %% [markdown]
# ## 5. Time per step and per epoch
#
# Measured by the loop: `time_per_step` on the logged steps, and the wall-clock `elapsed` at every epoch
# end (it includes validation and checkpointing; a resumed run counts the time before the disconnect).

# %%
import pandas as pd

hist = pd.DataFrame(result.history)
epoch_cols = ["epoch", "step", "elapsed", "eval_seconds"] + [c for c in hist if c.startswith("val_")]
epochs = hist[hist["kind"] == "epoch"][[c for c in epoch_cols if c in hist]]
epochs = epochs.assign(epoch_seconds=epochs["elapsed"].diff().fillna(epochs["elapsed"]))
print(
    f"median time per step: {hist['time_per_step'].median():.2f} s on {DEVICE} "
    f"({cfg.sketches_per_batch} sketches + {cfg.photos_per_batch} photos, x{1 + cfg.augment_views} views, "
    f"{cfg.image_size} px)"
)
epochs.round(3)

# %% [markdown]
# ## 6. What is in the run folder
#
# `last.pt` (resume), `best.pt` (evaluation: notebook 04), the history as JSON and CSV. Checkpoints hold
# only tensors and plain containers, so `torch.load(weights_only=True)` opens them.

# %%
for f in sorted(result.output_dir.iterdir()):
    print(f"{f.name:24s} {f.stat().st_size / 2**20:8.2f} MiB")
