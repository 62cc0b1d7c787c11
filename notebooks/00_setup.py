# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dsn-lab/dsn-lab/blob/main/notebooks/00_setup.ipynb)
#
# # 00 · Setup: where am I running, what hardware do I have, where do files go
#
# This course reproduces the **Domain-Smoothing Network** (DSN; Wang, Wang, Yan, Wu, Deng, IJCAI 2021)
# for **zero-shot sketch-based image retrieval** (ZS-SBIR): a sketch of a class never seen in training
# is the query, natural photos are the gallery. Every notebook imports the `dsn_lab` package; no model,
# loss or metric is defined in a notebook.
#
# **What you should see when you run this notebook top to bottom**
#
# 1. whether you are on Colab or a local Jupyter, and which Python;
# 2. the GPU (`nvidia-smi`), or a clear "CPU only" line; the torch device and whether **bfloat16** is
#    supported (the training loop uses bf16 autocast where it is, fp16 + a GradScaler where it is not);
# 3. how the package was installed (from its repository on Colab, editable in a local clone);
# 4. where datasets, checkpoints and figures go: Google Drive on Colab if you ask for it, local folders
#    otherwise;
# 5. the list of training presets.
#
# Nothing here is slow: the notebook finishes in seconds.

# %% tags=["parameters"]
QUICK = True  # True: CPU-sized defaults (CI runs every notebook this way); False: full runs
USE_DRIVE = False  # Colab: runs and figures on Google Drive (they survive a disconnect; 04 finds 03's run)
DRIVE_DIR = "/content/drive/MyDrive/dsn_lab"  # Colab: the folder on Drive (mounted when USE_DRIVE)

# %% [markdown]
# ## 1. Colab or local? The setup cell
#
# Colab imports the module `google.colab` into every kernel, so its presence in `sys.modules` is a
# reliable test. The cell below is the **setup cell that opens every notebook of the course**. It makes
# sure the package is there, in this order:
#
# 1. `import dsn_lab` works (a local kernel with the package, or a runtime that installed it
#    before): nothing to install;
# 2. the notebook sits inside a clone of the repository (a folder above holds `dsn_lab/colab.py`):
#    `pip install -e <clone>`;
# 3. otherwise (Colab): `pip install "dsn-lab @ git+https://github.com/dsn-lab/dsn-lab@v0.1.0"`, the
#    package at the version this notebook was written for (tag `v0.1.0`), without the Jupyter server
#    packages (those are the `[lab]` extra of a local install; Colab brings its own).
#
# Then one call, `dsn_lab.colab.setup(use_drive=USE_DRIVE, drive_dir=DRIVE_DIR, quick=QUICK)`, decides
# the folders (section 4) and returns them: `RUNS_DIR` for checkpoints, `FIG_DIR` for figures that
# carry a result, and `fig_path(name)` for one figure. The install lines cannot be a package call (the
# package is what they install); everything after them is one. The cell after the setup cell in the other
# notebooks is one call too: `DEVICE = dsn_lab.course.pick_device()` (section 2 shows what it decides).

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
import platform

print("Python", platform.python_version(), "on", platform.platform())
print("running on Colab" if IN_COLAB else "running locally (Jupyter / VS Code / CI)")

# %% [markdown]
# ## 2. The GPU
#
# `nvidia-smi` lists the GPU, its memory and the driver's CUDA version. On a machine without an NVIDIA
# driver the cell says so: every notebook then runs on the CPU with its `QUICK` sizes. On Colab, pick
# *Runtime → Change runtime type → GPU* and run again.

# %%
import shutil
import subprocess

if shutil.which("nvidia-smi"):
    print(subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout)
else:
    print("nvidia-smi not found: no NVIDIA GPU here, the notebooks use the CPU.")

# %%
import os

import torch

from dsn_lab.inference import amp_policy

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print("torch", torch.__version__, "| device:", DEVICE)
if DEVICE.type == "cuda":
    props = torch.cuda.get_device_properties(0)
    print(
        f"GPU: {props.name}, {props.total_memory / 2**30:.1f} GiB, compute capability "
        f"{props.major}.{props.minor}"
    )
    policy = amp_policy(True, DEVICE)  # the choice training and evaluation make with amp on
    plan = f"{policy.dtype} autocast" + (" + GradScaler" if policy.scaler else "")
    print("bfloat16 supported:", torch.cuda.is_bf16_supported(), "-> mixed precision:", plan)
else:
    print(f"CPU: {os.cpu_count()} cores; mixed precision is off on the CPU (config.amp is ignored there)")

# %% [markdown]
# A tiny matrix product under autocast checks that the chosen precision actually runs on this device
# (on the CPU, bf16 autocast works but is rarely faster; the training loop keeps float32 there, so the
# cell tries bf16 only to show it runs).

# %%
amp_dtype = amp_policy(True, DEVICE).dtype or torch.bfloat16  # no policy dtype on the CPU: try bf16
a = torch.randn(256, 256, device=DEVICE)
with torch.autocast(device_type=DEVICE.type, dtype=amp_dtype):
    b = a @ a
exact = a @ a
print(
    "autocast",
    amp_dtype,
    "->",
    b.dtype,
    "| relative error vs float32:",
    f"{((b.float() - exact).norm() / exact.norm()).item():.2e}",
)

# %% [markdown]
# ## 3. How is the package installed?
#
# * **Colab**: the setup cell ran `pip install "dsn-lab @ git+https://github.com/dsn-lab/dsn-lab@v0.1.0"`
#   (in a fork, change `REPOSITORY` in the setup cell). Re-running the setup cell in the same runtime
#   finds the package and skips the install.
# * **Local clone**: install once, editable, so your edits to `dsn_lab/` are picked up on a kernel
#   restart: `make install` (a `.venv` with the package, the `[lab]` Jupyter servers and the test
#   tools), then select that kernel.
#
# The cell below reads pip's record of the installation (`direct_url.json`).

# %%
import importlib.metadata as md
import json
from pathlib import Path

try:
    dist = md.distribution("dsn-lab")
    direct = dist.read_text("direct_url.json")
    info = json.loads(direct) if direct else {}
    editable = info.get("dir_info", {}).get("editable", False)
    how = "editable (local clone)" if editable else info.get("url", "from an index or a wheel")
except md.PackageNotFoundError:
    how = "not installed: imported from the working directory"
print("dsn_lab imported from", Path(dsn_lab.__file__).parent)
print("installed:", how)

# %% [markdown]
# ## 4. Where do data, checkpoints and figures go?
#
# | what | Colab with `USE_DRIVE = True` | everywhere else |
# |---|---|---|
# | datasets | the local disk (`~/.cache/dsn_lab`, or `$DSN_LAB_DATA`) | the same |
# | checkpoints, histories | `DRIVE_DIR/runs/<run>` on Google Drive | `runs/<run>` in the clone |
# | figures | `DRIVE_DIR/figures` | `figures/` in the clone |
#
# Outside a clone (a notebook downloaded on its own), `runs/` and `figures/` are made in the working
# directory.
#
# On Colab the local disk is wiped when the runtime disconnects, and every notebook gets a runtime of
# its own. With `USE_DRIVE = True` (parameters cell; Colab asks once for permission to mount Drive)
# runs live on Drive: notebook 03's training continues after a disconnect, and notebooks 04–07 find the
# runs already trained instead of training again. A run's folder is named after its configuration
# (`dsn_lab.course.run_folder`: `<preset>-<losses>-seed<k>-<key>`), and `dsn_lab.course.ensure_run`
# trains it only when it is missing, so running 00→07 trains each configuration once.
#
# Datasets stay on the local disk: reading tens of thousands of small images from a mounted Drive is
# far slower than copying one archive once. Keep the *archive* on Drive; notebook 01 copies and
# extracts it (`dsn_lab.colab.import_dataset_archive`). `$DSN_LAB_RUNS` and `$DSN_LAB_FIGURES`, when
# set, win over both columns (CI points them at temporary folders).

# %%
print(WS.describe())
print("runs go to", WS.runs, "(one folder per configuration, named by dsn_lab.course.run_folder)")
print("a figure goes to", fig_path("example"))

# %% [markdown]
# ## 5. The presets
#
# Every run is described by one `DSNConfig` (`dsn_lab/config.py`); named presets hold the paper's
# settings (Sketchy split 1, TU-Berlin; 64-d and 512-d codes) and the offline CPU settings on
# **EmojiSketch**, the small benchmark that the course uses when no GPU and no dataset are available
# (`emoji-course`, `emoji-demo`, `emoji-quick`: 256-d codes, class-aligned batches of 16 sketches + 32 photos).

# %%
import pandas as pd

from dsn_lab.config import PRESETS

cols = [
    "dataset",
    "backbone",
    "image_size",
    "hashing_dim",
    "sketches_per_batch",
    "photos_per_batch",
    "epochs",
    "lr",
    "optimizer",
    "faithful",
]
pd.DataFrame({name: {c: getattr(cfg, c) for c in cols} for name, cfg in PRESETS.items()}).T

# %% [markdown]
# ## 6. Which parts of the package are here?
#
# One line per module of `dsn_lab` (they import lazily; this only looks them up).

# %%
import importlib.util

for name in (
    "config",
    "data",
    "model",
    "losses",
    "memory",
    "semantics",
    "step",
    "train",
    "embed",
    "metrics",
    "analysis",
    "plots",
    "widgets",
    "colab",
):
    found = importlib.util.find_spec(f"dsn_lab.{name}") is not None
    print(f"dsn_lab.{name:10s}", "ok" if found else "MISSING")

# %% [markdown]
# ### Where the course is going: the demo's full run
#
# `make demo` (or `python -m dsn_lab demo`) trains DSN on EmojiSketch in about 10 minutes on a 2-core CPU;
# `make figures` is the same run with the CE + KD baseline beside it, and its figures are committed in
# `figures/`. Its training curves and six unseen sketches with their top-8 photos (framed green when the
# concept is right). Notebook 03 trains the course's version of this run (`emoji-course`: every backbone
# stage trains, as in the paper, where the demo freezes the early ones to fit more steps) and draws its
# curves; notebook 07 explores its retrieval.

# %%
WS.show_full_run("demo_training_curves", "demo_retrieval_grid", command="make figures", made_here=False)

# %% [markdown]
# ## 7. Exercises
#
# Each exercise: the task below, a cell tagged `exercise` to fill in (replace `None` where it says
# `# YOUR CODE HERE`), and a check cell that compares your answer with what the package computes
# (`dsn_lab.exercises`): ✓ when it agrees, ✗ with what is off, "not answered yet" while the answer is `None`.
# The answers are in `notebooks/solutions/00_setup_solutions.py`; try first, and predict before you
# compute. They use `dsn_lab.config` (the fields of `DSNConfig`, `QUIRKS`, `cfg.quirk`, `cfg.quirks()`,
# `cfg.diff`) and the configs built in the next cell.

# %%
from dsn_lab import exercises as ex
from dsn_lab.config import QUIRKS, get_preset

HEAD_CONFIGS = {  # a preset, the same with faithful=True, and that with head_bias set explicitly
    "emoji-quick": get_preset("emoji-quick"),
    "emoji-quick faithful": get_preset("emoji-quick", faithful=True),
    "emoji-quick faithful + imagenet": get_preset("emoji-quick", faithful=True, head_bias="imagenet"),
}
STEP_CONFIGS = {  # full DSN, the SAKE baseline (no SupCon, no memory) and a paper preset
    "emoji-quick": get_preset("emoji-quick"),
    "emoji-quick SAKE": get_preset("emoji-quick", use_contrastive=False, use_memory=False),
    "sketchy-s1-paper": get_preset("sketchy-s1-paper"),
}
print(
    "head_bias fields:", {k: c.head_bias for k, c in HEAD_CONFIGS.items()}, "| QUIRKS:", QUIRKS["head_bias"]
)

# %% [markdown]
# ### Exercise 00.1 · Which head-bias initialisation does each config train with?
#
# A fidelity field left at `None` follows `faithful`: `QUIRKS[name]` is `(released value, fixed value)`, and
# an explicit value always wins. Without calling `cfg.quirk`, write the `head_bias` in force for each config
# of `HEAD_CONFIGS`. The check compares with `cfg.quirk("head_bias")`.

# %% tags=["exercise"]
# Exercise 00.1
in_force = None  # YOUR CODE HERE: {name: "random" or "imagenet"} for each name in HEAD_CONFIGS

# %%
ex.check_quirk_in_force(in_force, HEAD_CONFIGS, "head_bias")

# %% [markdown]
# ### Exercise 00.2 · How many images go through the network in one training step?
#
# A step draws `sketches_per_batch` sketches (S) and `photos_per_batch` photos (P); with SupCon on
# (`use_contrastive`), each image also comes with `augment_views` augmented views, and all of them go
# through the network in one forward pass (without SupCon the views are not computed). Compute the number
# for each config of `STEP_CONFIGS` from its fields. The check counts the images `dsn_lab.step.dsn_step`
# feeds the network (the ImageNet teacher's own pass over the S + P plain images not counted). Which
# costs more per step: a bigger batch or one more view?

# %% tags=["exercise"]
# Exercise 00.2
images = None  # YOUR CODE HERE: {name: images per step} for each name in STEP_CONFIGS

# %%
ex.check_images_per_step(images, STEP_CONFIGS)

# %% [markdown]
# ### Exercise 00.3 · Released versus fixed: how many behaviours differ?
#
# `sketchy-s1-released` (every quirk of the released code) and `sketchy-s1-paper` (the quirks fixed)
# differ in a few raw fields (`cfg.diff`), yet in many behaviours. Give the names of the fidelity fields
# whose value *in force* differs between the two (`cfg.quirks()` lists every one with its value in
# force). Why does one field, `faithful`, change so many?

# %% tags=["exercise"]
# Exercise 00.3
RELEASED, FIXED = get_preset("sketchy-s1-released"), get_preset("sketchy-s1-paper")
behaviours = None  # YOUR CODE HERE: the set of fidelity fields whose value in force differs

# %%
ex.check_quirks_differ(behaviours, RELEASED, FIXED)

# %% [markdown]
# **Next:** `01_data_preparation` builds the datasets, `02_model_and_losses` opens up the model.
