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
# **One run, reused**: the run is stored in a folder named after its configuration
# (`dsn_lab.course.run_folder`); notebooks 04, 05, 06 and 07 ask for the same configuration (the same
# `OVERRIDES`) and use this run instead of training it again. Whichever notebook asks first trains it.
#
# **GPU**: the reproduction presets (`sketchy-s1-released` / `-paper`, `tuberlin-released` / `-paper`)
# need a GPU and the dataset (notebook 01). As released, Sketchy trains 20 epochs × 1,068 steps (seed 1)
# and keeps the epoch with the best paired ITQ mAP of held-out sketch/photo pairs; TU-Berlin trains 16
# epochs (seed 2021) and keeps the last epoch. On a CPU this notebook falls back to the offline `emoji-*`
# presets; with `QUICK = True` the run is a few steps long.

# %% tags=["parameters"]
QUICK = True
PRESET = (
    "emoji-quick" if QUICK else "emoji-course"
)  # full: "emoji-course" (CPU ok) or "sketchy-s1-paper" (GPU)
VARIANT = "tiny" if QUICK else "full"  # EmojiSketch variant (emoji presets only)
# the same settings in 03-07, so that every notebook finds this run (checkpoint and log intervals do not
# change a run: they do not change its folder either)
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
# and the training cell continues from the last checkpoint. The run folder is
# `RUNS_DIR/<preset>-<losses>-seed<seed>-<key>` (`dsn_lab.course.run_folder`; the key is a digest of the
# configuration): notebooks 04–07 look for the run there, so with Drive they use this notebook's run
# instead of training their own. Locally, or without Drive, `runs/` is used.

# %%
print(WS.describe())

# %% [markdown]
# ## 2. The configuration
#
# A preset is a `DSNConfig`; `OVERRIDES` changes fields. A paper preset without a GPU is replaced by the
# CPU preset with a message (it would take weeks on a CPU).

# %%
from dsn_lab.course import preset_config, run_folder

if DEVICE.type == "cpu" and not PRESET.startswith(("emoji", "cpu")):
    print(f"{PRESET} needs a GPU; this machine has none -> using emoji-course instead.")
    PRESET = "emoji-course"
cfg = preset_config(PRESET, variant=VARIANT, **OVERRIDES)
cfg = cfg.replace(output_dir=str(run_folder(cfg, RUNS_DIR)))  # the run's folder, shared with 04-07
print("this run's folder:", cfg.output_dir)
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
# ### One training step, by hand
#
# The pieces the trainer puts together, one at a time, on one batch: the config's paired loader
# (class-aligned batches: the class of every sketch also among the photos), the model as `train` builds it
# (before the head initialisation `train` does first, from a probe or an SVD: `head_init`), the step's
# fixed inputs (`step_inputs`: the frozen ImageNet teacher with its WordNet `cid_mask` for KD, and the
# sketch memory bank), the optimiser with its two learning rates (`make_optimizer`: the backbone at
# `lr * backbone_lr_mult`), and `dsn_step`; then backward and one optimiser step, and `dsn_step` again on
# the same batch (the memory bank put back as it was). The table has the terms (unweighted) and the total
# (weighted by the `w_*` fields) before and after. Which terms fell? Did any rise? (Adam's first update
# moves every weight by about its learning rate, whichever way its gradient points.) The trainer does
# exactly this, each time on a new batch.

# %%
from pathlib import Path

import pandas as pd
import torch

from dsn_lab.data.batching import paired_loader_from_config
from dsn_lab.model import build_model
from dsn_lab.selection import training_sets
from dsn_lab.step import dsn_step, make_optimizer, step_inputs

torch.manual_seed(cfg.seed)
data = training_sets(cfg, Path(cfg.data_root), verbose=False)
batch = next(iter(paired_loader_from_config(cfg, data["sketch"], data["photo"], seed=cfg.seed)))
print({k: tuple(v.shape) for k, v in batch.items() if hasattr(v, "shape")})
print(
    f"+ {len(batch['sketch_views'])} augmented view(s) of every sketch and photo (the views SupCon compares)"
)
net = build_model(cfg, len(data["classes"])).to(DEVICE).train()
fixed = step_inputs(cfg, data["classes"], net.feature_dim, DEVICE)
optimizer = make_optimizer(net, cfg)
step_cfg = cfg.replace(use_kd=fixed.use_kd)  # as the trainer does: KD only when there is a teacher
bank = {k: v.clone() for k, v in fixed.memory.state_dict().items()} if fixed.memory is not None else None


before = dsn_step(net, batch, step_cfg, teacher=fixed.teacher, memory=fixed.memory, cid_mask=fixed.cid_mask)
optimizer.zero_grad()
before.total.backward()  # gradients of the weighted total
optimizer.step()  # one AdamW update
if bank is not None:
    fixed.memory.load_state_dict(bank)  # the bank the first call saw
with torch.no_grad():
    after = dsn_step(
        net, batch, step_cfg, teacher=fixed.teacher, memory=fixed.memory, cid_mask=fixed.cid_mask
    )
print("learning rates:", {g.get("name", "head"): g["lr"] for g in optimizer.param_groups})
pd.DataFrame(
    {
        when: {"total": float(out.total.detach()), **{k: float(v.detach()) for k, v in out.terms.items()}}
        for when, out in (("before the step", before), ("after one step", after))
    }
).round(4)

# %% [markdown]
# ### Why the CPU presets differ from the paper's settings
#
# The `emoji-*` presets run DSN's method with settings that small CPU batches need. The code cell
# below reads each setting from the presets. The "measured" column gives val mAP@all on the 90
# held-out *training* concepts (never the unseen ones). The ladder rows (SupCon, BatchNorm, classifier)
# each add one change to the row above, with 240 s of training per row on a 2-core CPU and the SVD head
# (`python benchmarks/bench_emoji_recipe.py`, README "The demo"); the first row, 0.167, keeps the released
# settings for all three. The probe row compares two 160-step `emoji-course` runs: the SVD head (the
# `make demo` of an earlier release, README "The demo") and the same run with the probe (`dsn_lab/config.py`'s
# comment). The last row is the demo's own economy (README "The demo's recipe"); the course trains every
# stage, as the paper does.
#
# | choice | released (paper) | course (`emoji-*`) | why | measured |
# |---|---|---|---|---|
# | backbone | CSE-ResNet50: every SE block sees the domain flag | EfficientNet-Lite0; the flag enters through a FiLM layer on the pooled feature (identity at the start) | the paper's network would take weeks on a CPU (above); Lite0 has no SE blocks to carry the flag | — |
# | input, code | 224 px; 64-d or 512-d codes | 112 px; 256-d codes | a CPU step has to stay short | — |
# | batch | 32 sketches + 64 photos, drawn independently | class-aligned batches of 16 sketches + 32 photos: 16 concepts, each with its sketch and 2 photos | with 512 concepts, independent draws almost never put a sketch and a photo of one concept in the same batch, so SupCon and the memory bank get no positives (notebook 01) | kept in every ladder row |
# | optimiser | Adam, lr 1e-4 for everything, lr × 0.001^(epoch/epochs) | AdamW, head lr 1e-3, backbone lr × 0.1 (`emoji-demo`: × 0.3, last row), cosine over the run's steps | a new head needs a larger lr than the ImageNet backbone; a short run should anneal by its end | — |
# | SupCon weight | 0.1 | 1.0 | class-aligned batches give every sketch a photo of its concept in the batch, and SupCon is the term that pulls the two together | 0.167 → **0.188** |
# | BatchNorm | trained (batch statistics, running averages updated) | frozen at ImageNet's statistics (`freeze_bn`); its affine weights still train | 48 images of 16 concepts give poor batch statistics, and the running averages drift away from the ones the features were trained with | 0.188 → **0.313** |
# | classifier | `nn.Linear` on the raw code | cosine classifier, `classifier_scale=16` | CE then shapes the same L2-normalised geometry that retrieval ranks | 0.313 → **0.347** |
# | memory layout | contiguous (`channels_last` available but off) | `channels_last` | speed only | a CPU step about 1.7× faster (`dsn_lab/config.py`'s comment; `python benchmarks/bench_train.py --preset emoji-course --set channels_last=false` times the other layout) |
# | head start | hashing and KD heads from the SVD of the ImageNet classifier, classifier random | `emoji-course`: a linear probe on the frozen features first, then fine-tuning (`head_init="probe"`, `dsn_lab/probe.py`); `emoji-quick` keeps the SVD head (`head_init="imagenet"`), because its learning test needs a run that starts below the frozen features | fitting a random classifier in the first steps pushes the pretrained features around (LP-FT) | best val mAP@all 0.402 → **0.427** |
# | trained stages, views | every stage of the backbone; two extra augmented views of each image | `emoji-course`, `emoji-quick`: the same; `emoji-demo` (`make demo`): the stem and the first 3 stages keep their ImageNet weights (`frozen_stages=4`), one extra view, backbone lr × 0.3, 400 steps | a step of `emoji-course` takes 2.3 s on a 2-core CPU, most of its backward pass in the early, high-resolution stages; an `emoji-demo` step takes about 0.9 s, so 2.5× the steps fit the same time | best val mAP@all 0.427 (160 steps) → **0.531** (400 steps) |

# %%
import pandas as pd

from dsn_lab.config import get_preset

RECIPE_FIELDS = [
    "backbone", "image_size", "hashing_dim", "batch_sampler", "sketches_per_batch", "photos_per_batch",
    "optimizer", "lr", "backbone_lr_mult", "lr_schedule", "w_contrastive", "freeze_bn", "classifier_scale",
    "channels_last", "head_init", "frozen_stages", "augment_views", "epochs", "steps_per_epoch",
]  # fmt: skip
presets = {
    name: get_preset(name) for name in ("sketchy-s1-paper", "emoji-course", "emoji-demo", "emoji-quick")
}
recipe = pd.DataFrame({name: {f: str(getattr(c, f)) for f in RECIPE_FIELDS} for name, c in presets.items()})
changed = presets["emoji-course"].diff(presets["sketchy-s1-paper"])  # {field: (emoji-course, paper)}
other = sorted(set(changed) - set(RECIPE_FIELDS) - {"notes", "output_dir", "preset"})
print("emoji-course also differs from sketchy-s1-paper in:", ", ".join(other))
recipe

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
#
# `dsn_lab.course.ensure_run` is the call every notebook makes for a run: it trains (here with
# `live=True`, through `train_live`) only when the run folder has no finished run, and returns a finished
# one at once. At each epoch end it also records the domain gap of the unseen classes into the history,
# the curves notebook 06 draws.

# %%
from dsn_lab.course import ensure_run

curves = fig_path(f"training_curves_{cfg.preset}")
result = ensure_run(cfg, RUNS_DIR, device=DEVICE, live=True, refresh_s=REFRESH_S, save_to=curves)
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
# ### This run beside the full run
#
# QUICK trains a few steps on tiny images, so its numbers are noise. The full run (`QUICK = False`: the
# `emoji-course` preset, 5 epochs of 32 steps at 112 px) was run once on a 2-core CPU with
# `python scripts/course_full_runs.py`, and its curves and numbers are committed
# (`figures/training_curves_emoji-course.png`, `results/training_emoji-course.json`). This run's summary is
# saved the same way (`WS.save_result`: a `-quick.json` for a QUICK run, so it never replaces the full
# one); below, the two side by side, then the full run's curves.

# %%
from IPython.display import display

from dsn_lab.course import beside_full_run

summary = {
    "preset": cfg.preset,
    "run": result.output_dir.name,
    "optimiser steps": int(hist["step"].max()),
    "wall seconds": round(float(epochs["elapsed"].iloc[-1]), 1),
    "median seconds per step": round(float(hist["time_per_step"].median()), 3),
    "selection": result.selection,
    "best epoch": result.best_epoch,
    "best val metric": result.best_metric,
    "device": str(DEVICE),
    "epochs": epochs.to_dict("records"),
}
print("saved", WS.save_result(f"training_{cfg.preset}", summary))
keys = [
    "preset",
    "optimiser steps",
    "wall seconds",
    "median seconds per step",
    "best epoch",
    "best val metric",
]
display(beside_full_run(summary, WS.full_run_result("training_emoji-course"), keys, quick=QUICK))
WS.show_full_run("training_curves_emoji-course")

# %% [markdown]
# ## 6. What is in the run folder
#
# `last.pt` (resume), `best.pt` (evaluation: notebook 04), the history as JSON and CSV. Checkpoints hold
# only tensors and plain containers, so `torch.load(weights_only=True)` opens them.

# %%
for f in sorted(result.output_dir.iterdir()):
    print(f"{f.name:24s} {f.stat().st_size / 2**20:8.2f} MiB")

# %% [markdown]
# ## 7. Exercises
#
# Each exercise: the task below, a cell tagged `exercise` to fill in (replace `None` where it says
# `# YOUR CODE HERE`), and a check cell that compares your answer with what the package computes
# (`dsn_lab.exercises`): ✓ when it agrees, ✗ with what is off, "not answered yet" while the answer is `None`.
# The answers are in `notebooks/solutions/03_training_solutions.py`; try first.
#
# The exercises open the run trained above: its model (eval mode, on the CPU), its config `run_cfg`, and
# one training batch built as the trainer builds them (`batch`: the dict the paired loader yields).

# %%
from dsn_lab import exercises as ex

# the data on this machine (a run from Drive may have been trained elsewhere)
model, run_cfg, batch = ex.load_run_and_batch(result.final_checkpoint, data_root=cfg.data_root)
print({k: tuple(v.shape) for k, v in batch.items() if hasattr(v, "shape")})
print("loss weights:", {k: getattr(run_cfg, f"w_{k}") for k in ("ce", "kd", "contrastive", "memory")})

# %% [markdown]
# ### Exercise 03.1 · The total that train logs
#
# Every logged step row holds the unweighted terms (`loss_ce`, `loss_kd`, `loss_contrastive`,
# `loss_memory`) and the total `loss` the optimiser minimised. Rebuild the total of the last logged row
# from its terms and the weights `run_cfg.w_<term>`. Which term is largest? How would the total change with
# the paper's weight on SupCon (0.1 instead of this preset's value)? The check compares with the logged
# `loss` (tolerance 1e-4 relative).

# %% tags=["exercise"]
# Exercise 03.1
row = [r for r in result.history if r["kind"] == "step"][-1]  # the last logged step
print({k: round(v, 4) for k, v in row.items() if k.startswith("loss")})
total_by_hand = None  # YOUR CODE HERE: the weighted sum of the row's terms

# %%
ex.check_logged_total(total_by_hand, row, run_cfg)

# %% [markdown]
# ### Exercise 03.2 · The CE term of one step, by hand
#
# `dsn_lab.step.dsn_step` runs the model once on `[sketches, photos, views…]` with a domain column (a
# float `[N, 1]` tensor: 0 for a sketch, 1 for a photo; the FiLM layers read it) and takes the
# cross-entropy of the class logits (the model's first output) of the un-augmented sketches and photos
# together. Compute that CE yourself from `batch` and `model` (`torch.nn.functional.cross_entropy`), as
# `ce_by_hand`. The check runs `dsn_losses` with only CE switched on and compares (tolerance 1e-4); it
# recognises a swapped domain column or a forgotten domain.

# %% tags=["exercise"]
# Exercise 03.2
ce_by_hand = None  # YOUR CODE HERE: CE of model(images, domain)[0] on the sketches and photos of `batch`

# %%
ex.check_ce_term(ce_by_hand, model, batch, run_cfg)

# %% [markdown]
# ### Exercise 03.3 · SupCon against its temperature
#
# SupCon divides the cosine similarities by a temperature $T$ (training: `run_cfg.temperature`) and
# scales each anchor's loss by $T / 0.07$. Predict first: does the loss on a fixed batch rise or fall as
# $T$ grows? Then compute it for each value of `TEMPERATURES` with `dsn_lab.losses.SupConLoss`
# (`base_temperature=0.07`, as in training) on the codes SupCon sees in training (`z`, `z_labels`), and
# plot the loss against $T$ (log scale). The check recomputes each value (tolerance 1e-4 relative).

# %% tags=["exercise"]
# Exercise 03.3
z, z_labels = ex.supcon_inputs(model, batch, run_cfg)  # [N, views, D]: what dsn_step gives SupCon
TEMPERATURES = [0.03, 0.05, 0.07, 0.1, 0.2, 0.5, 1.0]
sweep = None  # YOUR CODE HERE: one SupCon value per temperature (then plot them)

# %%
ex.check_temperature_sweep(sweep, z, z_labels, TEMPERATURES)

# %% [markdown]
# ### Exercise 03.4 · The cosine learning-rate schedule
#
# The course presets decay the learning rate over the run's optimiser steps as half a cosine:
# $\text{lr}_k = \text{lr} \cdot \tfrac12\,(1 + \cos(\pi k / K))$, $K$ = `result.planned_steps`.
# Compute the multiplier for $k = 0, 1, \dots, K$ as `lr_by_hand` and plot it with the logged `lr`
# divided by `run_cfg.lr` (the trainer sets the lr before each step; with a time budget, progress is the
# larger of the step and the time fraction, so a slow run decays sooner). The check compares with
# `dsn_lab.step.lr_factor` by step (tolerance 1e-6).

# %% tags=["exercise"]
# Exercise 03.4
lr_by_hand = None  # YOUR CODE HERE: K + 1 multipliers

# %%
ex.check_lr_schedule(lr_by_hand, run_cfg, result.planned_steps)
