# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dsn-lab/dsn-lab/blob/main/notebooks/06_domain_gap.ipynb)
#
# # 06 · The domain gap: does DSN smooth it?
#
# DSN's two claims: it **smooths the domain gap** between sketches and photos, and it **reduces the
# intra-class diversity of sketches**. A t-SNE picture alone cannot show that (its layout depends on
# perplexity and seed), so this notebook shows the pictures *and* measures that move one way as the gap
# shrinks (`dsn_lab.analysis.domain_gap`, computed on L2-normalised codes of the unseen classes):
#
# | measure | smaller gap means |
# |---|---|
# | accuracy of a cross-validated linear sketch-vs-photo classifier | down, towards 0.5 |
# | MMD² between the domains (RBF kernel, median bandwidth) | down, towards 0 |
# | distance between each class's sketch and photo centroids | down |
# | sketch intra-class dispersion (DSN's second claim) | down |
# | share of sketches whose nearest photo has their class | up |
#
# EmojiSketch (v1) has one sketch per concept, so the sketch dispersion is undefined there (NaN, no
# panel): DSN's second claim needs several sketches per class (Sketchy, TU-Berlin, EmojiSketch v2).
#
# **What you should see**: two runs — the baseline (CE + KD, i.e. SAKE) and full DSN — with the
# measures recorded every epoch by a training callback; the measures before and after as bars; t-SNE and
# UMAP maps before and after, coloured by domain and by class. With `QUICK` the runs are tiny, so the
# effects are small and noisy; the full settings show them clearly.
#
# **Runs reused**: DSN is notebook 03's run and the baseline is notebook 05's "SAKE baseline" row (the
# same `PRESET` and `OVERRIDES`, so the same run folders, `dsn_lab.course.run_folder`); this notebook
# trains a run only when it is missing.

# %% tags=["parameters"]
QUICK = True
PRESET = "emoji-quick" if QUICK else "emoji-demo"  # full: "emoji-demo"
VARIANT = "tiny" if QUICK else "full"
# notebook 03's training settings: its run is the DSN run here, notebook 05's baseline the baseline
OVERRIDES = (
    {"steps_per_epoch": 4, "epochs": 2, "image_size": 64, "sketches_per_batch": 4, "photos_per_batch": 8}
    if QUICK
    else {}
)  # full: {}
MAX_SAMPLES = 200 if QUICK else 1000  # images per domain for the maps
METHODS = {  # name -> config overrides
    "baseline (CE+KD)": {"use_contrastive": False, "use_memory": False},
    "DSN": {},
}
RUNS_FROM = None  # None: RUNS_DIR; or a folder of runs to reuse (e.g. full runs on Drive)
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
# ## 1. Data: the unseen classes, with the evaluation transform

# %%
from dsn_lab.course import preset_config
from dsn_lab.data import get_dataset
from dsn_lab.data.transforms import eval_transform

base_cfg = preset_config(PRESET, variant=VARIANT, **OVERRIDES)
tf = eval_transform(base_cfg.image_size)
sketches = get_dataset(
    base_cfg.dataset, base_cfg.data_root, split="zero", domain="sketch", transform=tf, verbose=False
)
photos = get_dataset(
    base_cfg.dataset, base_cfg.data_root, split="zero", domain="photo", transform=tf, verbose=False
)
classes = sketches.classes
print(f"{len(sketches)} sketches, {len(photos)} photos, {len(classes)} unseen classes")

# %% [markdown]
# ## 2. The baseline and DSN runs, with the gap of every epoch
#
# `DomainGapCallback` is a training callback (`callback(model, epoch, step) -> dict`): at each epoch end
# it encodes a fixed, seeded subset of the unseen sketches and photos and returns the measures; the
# training loop puts them into the run history (`gap/...` columns). Every run `dsn_lab.course.ensure_run`
# trains carries one (`gap_recorder`, 500 images per domain), so the runs notebooks 03 and 05 trained
# already hold these curves: `ensure_run` returns them without training, and trains a run only when it is
# missing. Calling the same callback on the model *before* training gives the epoch-0 row.

# %%
import pandas as pd

from dsn_lab.checkpoint import load_trained_model
from dsn_lab.course import ensure_run, gap_recorder
from dsn_lab.model import build_model

histories, before_after, models = [], {}, {}
untrained = build_model(
    base_cfg,
    len(
        get_dataset(
            base_cfg.dataset, base_cfg.data_root, split="train", domain="sketch", verbose=False
        ).classes
    ),
).to(DEVICE)
recorder = gap_recorder(base_cfg)  # the callback (same images, same measures) every course run records
before = recorder(untrained, 0, 0)
for method, overrides in METHODS.items():
    result = ensure_run(base_cfg.replace(**overrides), RUNS_FROM or RUNS_DIR, device=DEVICE)
    models[method] = load_trained_model(result.final_checkpoint, DEVICE)[0]
    epochs = [r for r in result.history if r.get("kind") == "epoch" and "gap/mmd" in r]
    if not epochs:  # a run given from elsewhere, trained without the recorder: measure its final model
        epochs = [{"epoch": result.history[-1]["epoch"], **recorder(models[method], 0, 0)}]
    rows = [{"epoch": 0, **before}] + epochs
    histories += [{**r, "method": method} for r in rows]
    before_after[method] = {"before": before, "after": rows[-1]}
    print(f"{method}: {result.output_dir.name}, {result.history[-1]['epoch']:.0f} epochs")
history = pd.DataFrame(histories)
history[["method", "epoch"] + [c for c in history if c.startswith("gap/")]].round(3)

# %% [markdown]
# ## 3. The measures before and after training
#
# One panel per measure; a gap that DSN smooths shows as a lower "after" bar for DSN than for the
# baseline (higher for the nearest-neighbour agreement).

# %%
from dsn_lab import plots

plots.plot_gap_bars(before_after, save_to=fig_path("domain_gap_bars"))

# %% [markdown]
# ## 4. The measures over training

# %%
plots.plot_gap_measures(history, hue="method", save_to=fig_path("domain_gap_over_epochs"))

# %% [markdown]
# ## 5. t-SNE and UMAP, before and after
#
# The codes of the same unseen sketches and photos, before training (the initial model) and after (DSN),
# each map fitted jointly on both domains so sketches and photos share one map. Top row: coloured by
# domain (a clean split into a red and a blue island = a large gap); bottom row: by class (crosses =
# sketches, dots = photos; a class whose crosses sit among its dots = a smoothed gap). t-SNE is
# scikit-learn's (deterministic for a seed); UMAP compiles with numba on first use (≈ 20–40 s).

# %%
import numpy as np
from IPython.display import display

from dsn_lab.analysis import project
from dsn_lab.embed import extract_features

rng = np.random.default_rng(0)  # the same seeded subset of images before and after
sub_s = sketches.subset(np.sort(rng.choice(len(sketches), min(MAX_SAMPLES, len(sketches)), replace=False)))
sub_p = photos.subset(np.sort(rng.choice(len(photos), min(MAX_SAMPLES, len(photos)), replace=False)))


def codes(m):
    xs, ls = extract_features(m, sub_s, domain=0, device=DEVICE)
    xp, lp = extract_features(m, sub_p, domain=1, device=DEVICE)
    return [xs, xp], np.concatenate([ls, lp]), np.r_[np.zeros(len(xs)), np.ones(len(xp))]


feats_before, labels, domains = codes(untrained)
feats_after, _, _ = codes(models["DSN"])
for method in ("tsne", "umap"):
    before_2d = np.concatenate(project(feats_before, method=method, seed=0, normalize=True))
    after_2d = np.concatenate(project(feats_after, method=method, seed=0, normalize=True))
    fig = plots.plot_projection_before_after(
        before_2d,
        after_2d,
        domains,
        labels,
        class_names=classes,
        titles=("before training", "after training (DSN)"),
        suptitle=f"{method.upper()} of the unseen classes",
        save_to=fig_path(f"domain_gap_{method}"),
    )
    display(fig)

# %% [markdown]
# **Reading the result.** Compare the classifier accuracy and MMD rows first: those are the gap; then the
# sketch dispersion (the second claim); the maps are illustrations of the same numbers. Notebook 05 puts
# the retrieval mAP of the same kinds of runs side by side.
