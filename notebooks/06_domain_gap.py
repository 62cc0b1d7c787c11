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
PRESET = "emoji-quick" if QUICK else "emoji-course"  # full: "emoji-course"
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
# missing. The same callback's codes of the model *before* training, measured its way
# (`recorder.measure(recorder.codes(untrained))`), give the epoch-0 row.

# %%
import pandas as pd

from dsn_lab.checkpoint import load_trained_model
from dsn_lab.course import ensure_run, gap_recorder
from dsn_lab.model import build_model

histories, before_after, models, folders = [], {}, {}, {}
untrained = build_model(
    base_cfg,
    len(
        get_dataset(
            base_cfg.dataset, base_cfg.data_root, split="train", domain="sketch", verbose=False
        ).classes
    ),
).to(DEVICE)
recorder = gap_recorder(base_cfg)  # the callback (same images, same measures) every course run records
untrained_codes = recorder.codes(untrained)  # encoded once: measured here, drawn in section 5
before = recorder.measure(untrained_codes)
for method, overrides in METHODS.items():
    result = ensure_run(base_cfg.replace(**overrides), RUNS_FROM or RUNS_DIR, device=DEVICE)
    models[method] = load_trained_model(result.final_checkpoint, DEVICE)[0]
    folders[method] = result.output_dir
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
# ### The measures, symbol by symbol (`dsn_lab.analysis.domain_gap`)
#
# Inputs: sketch codes $S$ and photo codes $P$ of the unseen classes with their labels (here the recorder's
# fixed subset: `gap_recorder(cfg)`, at most `max_samples` = `GAP_SAMPLES` = 500 images per domain, seed
# 0; each column of the table is `gap/<key>` of the run history). `domain_gap(..., max_samples=1000)` caps
# each domain by a seeded subsample (`seed`), then, with `normalize=True` (default), replaces every code $x$
# by $x / \max(\lVert x \rVert_2, 10^{-12})$: all distances below are on the unit sphere (at most 2).
# $\mathcal C$ are the classes, $S_c$ / $P_c$ the codes of class $c$, $\mu^S_c$ / $\mu^P_c$ their means.
#
# **Domain classifier accuracy** (`domain_classifier_acc`): both domains subsampled to
# $n = \min(|S|, |P|)$ (so chance is exactly 0.5), domain labels $d_i$ (0 sketch, 1 photo), a logistic
# regression on standardised codes ($C = 1$) scored over $K = \min(F, n)$ shuffled stratified folds $T_k$
# ($F$ = `cv_folds`, 5; NaN when $K < 2$):
# $$\mathrm{acc} = \frac1K \sum_{k=1}^{K} \frac{1}{|T_k|} \sum_{i \in T_k} [\hat d_i = d_i]$$
#
# **RBF MMD²** (`mmd`; `dsn_lab.analysis.rbf_mmd2`): with $k(a, b) = \exp(-\lVert a - b \rVert^2 / 2\sigma^2)$,
# $n = |S|$, $m = |P|$, the unbiased estimate (Gretton et al. 2012)
# $$\widehat{\mathrm{MMD}}{}^2 = \frac{1}{n(n-1)} \sum_{i \ne j} k(s_i, s_j) + \frac{1}{m(m-1)} \sum_{i \ne j}
# k(p_i, p_j) - \frac{2}{nm} \sum_{i, j} k(s_i, p_j)$$
# (0 in expectation for equal distributions, so slightly negative values happen). The bandwidth
# (`mmd_bandwidth`; `rbf_mmd2(bandwidth=None)`) is the median heuristic over the distinct pairs of the
# pooled sample $Z = S \cup P$:
# $\sigma = \big(\operatorname{median}_{i < j} \lVert z_i - z_j \rVert^2\big)^{1/2}$, the median distance
# (for an even number of pairs the two middle squared distances are averaged); if that is 0, the root mean
# square distance, and if that is 0 too, 1.
#
# **Permutation p-value** (`mmd_pvalue`): $B$ = `n_permutations` (200 in `domain_gap`, 100 in the
# recorder) random splits of $Z$ into $n$ and $m$ codes, seeded, each giving $\widehat{\mathrm{MMD}}{}^2_b$:
# $$p = \frac{1 + |\{b : \widehat{\mathrm{MMD}}{}^2_b \ge \widehat{\mathrm{MMD}}{}^2 - 10^{-12}\}|}{1 + B}$$
# (NaN when $B = 0$): small means the gap is real, not noise.
#
# **Centroid distance** (`centroid_distance`), over the classes $\mathcal C'$ present in both domains:
# $$D_\mu = \frac{1}{|\mathcal C'|} \sum_{c \in \mathcal C'} \lVert \mu^S_c - \mu^P_c \rVert_2$$
#
# **Dispersion** (`sketch_dispersion`, DSN's second claim; `photo_dispersion` likewise on $P$), over the
# classes $\mathcal C_2$ with at least two codes (a single code is its own centroid; NaN when no class is
# left, as with EmojiSketch v1's one sketch per concept):
# $$\mathrm{disp}(S) = \frac{1}{|\mathcal C_2|} \sum_{c \in \mathcal C_2} \frac{1}{|S_c|} \sum_{s \in S_c}
# \lVert s - \mu^S_c \rVert_2$$
#
# **Cross-domain nearest-neighbour agreement** (`cross_domain_nn_agreement`), with $y(\cdot)$ the class
# (the first photo wins a tie):
# $$A = \frac{1}{|S|} \sum_{s \in S} \big[\, y(\operatorname{argmin}_{p \in P} \lVert s - p \rVert_2) = y(s)
# \,\big]$$

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
# ### The gap closing, epoch by epoch
#
# The recorder of section 2 also keeps the codes it measured at every epoch end
# (`<run folder>/gap_codes/epochNNN.npz`, `dsn_lab.analysis.load_gap_codes`), so the maps of the same
# images can be drawn over the whole training without a checkpoint per epoch. Epoch 0 is the untrained
# model of section 2 (`untrained_codes`). `project_sequence` fits one t-SNE per epoch, each
# starting from the previous epoch's layout, so the maps read as a sequence instead of each being rotated
# anew; watch the red crosses (sketches) leave their island and settle among the photos of their class.

# %%
from dsn_lab.analysis import load_gap_codes, project_sequence
from dsn_lab.course import GAP_CODES_DIR

try:
    by_epoch = {0: untrained_codes, **load_gap_codes(folders["DSN"] / GAP_CODES_DIR)}
except FileNotFoundError as exc:  # a run from elsewhere, trained before the recorder kept codes
    print(exc)
else:
    frames = [[c["sketch"], c["photo"]] for c in by_epoch.values()]
    maps = project_sequence(frames, "tsne", seed=0, normalize=True)
    first = by_epoch[0]
    fig = plots.plot_projection_panels(
        [np.concatenate(m) for m in maps],
        np.r_[np.zeros(len(first["sketch"]), int), np.ones(len(first["photo"]), int)],
        np.r_[first["sketch_labels"], first["photo_labels"]],
        titles=["untrained" if e == 0 else f"epoch {e}" for e in by_epoch],
        class_names=classes,
        panel_size=3.2,
        suptitle="DSN codes of the unseen classes over training (t-SNE, each map from the previous)",
        save_to=fig_path("domain_gap_tsne_over_epochs"),
    )
    display(fig)

# %% [markdown]
# ### This run beside the full run
#
# The full run (`QUICK = False`: notebook 03's DSN run and notebook 05's baseline on the full EmojiSketch,
# 500 images per domain in the recorder) was made once with `python scripts/course_full_runs.py`; its
# measures are committed in `results/domain_gap_emoji-course.json` and its figures in `figures/`.

# %%
from dsn_lab.course import beside_full_run

measures = ["domain_classifier_acc", "mmd", "centroid_distance", "cross_domain_nn_agreement"]
summary = {
    "preset": PRESET,
    **{f"{m}, {method}": before_after[method]["after"][f"gap/{m}"] for method in METHODS for m in measures},
    **{f"{m}, untrained": before[f"gap/{m}"] for m in measures},
    "over epochs": history.to_dict("records"),
}
print("saved", WS.save_result(f"domain_gap_{PRESET}", summary))
keys = [k for k in summary if k.endswith((", untrained", ", DSN")) or "baseline" in k]
display(beside_full_run(summary, WS.full_run_result("domain_gap_emoji-course"), keys, quick=QUICK))
WS.show_full_run("domain_gap_bars", "domain_gap_over_epochs", "domain_gap_tsne_over_epochs")

# %% [markdown]
# **Reading the result.** Compare the classifier accuracy and MMD rows first: those are the gap; then the
# sketch dispersion (the second claim); the maps are illustrations of the same numbers. Notebook 05 puts
# the retrieval mAP of the same kinds of runs side by side.

# %% [markdown]
# ## 6. Exercises
#
# Each exercise: the task below, a cell tagged `exercise` to fill in (replace `None` where it says
# `# YOUR CODE HERE`), and a check cell that compares your answer with what the package computes
# (`dsn_lab.exercises`): ✓ when it agrees, ✗ with what is off, "not answered yet" while the answer is `None`.
# The answers are in `notebooks/solutions/06_domain_gap_solutions.py`; try first. The definitions are after
# section 2. The exercises use DSN's codes of the subset of section 5 (`feats_after`), split by domain
# below; the checks run `domain_gap` on all of them (no subsample, no permutation test).

# %%
from dsn_lab import exercises as ex

sketch_feats, photo_feats = feats_after  # DSN's codes of the unseen sketches and photos of section 5
sketch_labels, photo_labels = labels[domains == 0], labels[domains == 1]
print(f"{len(sketch_feats)} sketches, {len(photo_feats)} photos, {sketch_feats.shape[1]}-d codes")

# %% [markdown]
# ### Exercise 06.1 · The centroid distance, by hand
#
# L2-normalise the codes, take each class's sketch centroid $\mu^S_c$ and photo centroid $\mu^P_c$, and
# average $\lVert \mu^S_c - \mu^P_c \rVert_2$ over the classes present in both domains. The check compares
# with `domain_gap(...)["centroid_distance"]` (tolerance 1e-5 relative) and recognises squared distances,
# the two domains' overall means, and raw codes. Why does a class-wise distance say more about retrieval
# than the distance between the overall means?

# %% tags=["exercise"]
# Exercise 06.1
centroid_distance = None  # YOUR CODE HERE: mean over classes of ||mu^S_c - mu^P_c|| (L2-normalised codes)

# %%
ex.check_centroid_distance(centroid_distance, sketch_feats, sketch_labels, photo_feats, photo_labels)

# %% [markdown]
# ### Exercise 06.2 · Sketch and photo dispersion
#
# The mean distance of a code to its class centroid, averaged over the classes with at least two codes
# (L2-normalised codes), for each domain, as `{"sketch": ..., "photo": ...}`. A class with a single code is
# skipped; with none left the value is `float("nan")`. Before you compute: which value is undefined on
# EmojiSketch v1, and what does that mean for DSN's second claim here?

# %% tags=["exercise"]
# Exercise 06.2
dispersion = None  # YOUR CODE HERE: {"sketch": ..., "photo": ...}

# %%
ex.check_dispersion(dispersion, sketch_feats, sketch_labels, photo_feats, photo_labels)

# %% [markdown]
# ### Exercise 06.3 · RBF MMD² on a small subset
#
# On `x_s` and `x_p` (the first `N_MMD` codes of each domain, L2-normalised): the pooled pairwise
# distances, the median-heuristic bandwidth $\sigma$ (distinct pairs only), the kernel
# $\exp(-d^2 / 2\sigma^2)$ and the unbiased estimate after section 2 (the $i = j$ terms left out). The check
# compares with `rbf_mmd2(x_s, x_p)` (tolerance 1e-5 relative + 1e-6) and recognises the biased estimate and
# the usual bandwidth slips. Then try `rbf_mmd2(x_s, x_p, bandwidth=...)` at 0.1σ and 10σ: why does the
# estimate fade at both ends?

# %% tags=["exercise"]
# Exercise 06.3
N_MMD = 100  # a small subset keeps the (n + m)² kernel small
x_s = sketch_feats[:N_MMD] / np.linalg.norm(sketch_feats[:N_MMD], axis=1, keepdims=True)
x_p = photo_feats[:N_MMD] / np.linalg.norm(photo_feats[:N_MMD], axis=1, keepdims=True)
mmd2_by_hand = None  # YOUR CODE HERE: the unbiased RBF MMD² of x_s and x_p, median bandwidth

# %%
ex.check_mmd2(mmd2_by_hand, x_s, x_p)

# %% [markdown]
# ### Exercise 06.4 · Does the nearest photo have the sketch's class?
#
# For every sketch, the nearest photo (Euclidean, L2-normalised codes); the share whose nearest photo has
# the sketch's class. The check compares with `domain_gap(...)["cross_domain_nn_agreement"]`. How does it
# relate to the retrieval metrics of notebook 04: which of them is it, up to the averaging?

# %% tags=["exercise"]
# Exercise 06.4
nn_agreement = None  # YOUR CODE HERE: the share of sketches whose nearest photo has their class

# %%
ex.check_nn_agreement(nn_agreement, sketch_feats, sketch_labels, photo_feats, photo_labels)
