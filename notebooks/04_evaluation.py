# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dsn-lab/dsn-lab/blob/main/notebooks/04_evaluation.ipynb)
#
# # 04 · Evaluation: features, every metric protocol, the paper's table, binary codes
#
# ZS-SBIR is scored by ranking the unseen-class photo gallery for every unseen-class sketch query. Papers
# all print **mAP@all** and **P@100** (Sketchy split 2: mAP@200 / P@200), but their code computes these
# numbers in different ways; `dsn_lab.metrics.evaluate_retrieval` implements each variant as an option,
# with DSN's protocol as the default.
#
# **What you should see**
#
# 1. features of the unseen sketches and photos from a trained checkpoint (cached on disk);
# 2. one table with every protocol — the same features give noticeably different numbers;
# 3. the paper's table next to this run (EmojiSketch numbers are *not* comparable with Sketchy's: a
#    different benchmark, shown for the format);
# 4. real-valued codes vs ITQ binary codes (one bit per code dimension: `cfg.hashing_dim` bits, 256 for the
#    `emoji-*` presets, 64 or 512 for the paper's);
# 5. AP per unseen class as a bar chart (saved to `figures/`), and a few ranked lists.
#
# The model is notebook 03's run (full DSN on `PRESET` with the same `OVERRIDES`), reused, not trained
# again: it is trained here only when it is missing (about a minute with `QUICK = True`). `CHECKPOINT`
# points at another run instead, e.g. a full run on Drive. With `QUICK` the numbers are low — the point is
# the pipeline.

# %% tags=["parameters"]
QUICK = True
PRESET = "emoji-quick" if QUICK else "emoji-course"  # full: "emoji-course" (or "sketchy-s1-paper" on a GPU)
VARIANT = "tiny" if QUICK else "full"  # EmojiSketch variant
# the training settings of notebook 03, so that its run (in RUNS_DIR, on Drive with USE_DRIVE) is reused
OVERRIDES = (
    {"steps_per_epoch": 4, "epochs": 2, "image_size": 64, "sketches_per_batch": 4, "photos_per_batch": 8}
    if QUICK
    else {}
)  # full: {}
CHECKPOINT = None  # None: 03's run (trained here if missing); or a run folder / .pt file
N_SHOW = 3  # queries shown as ranked lists
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
# ## 1. A trained checkpoint
#
# Notebook 03's run, when it is there: `dsn_lab.course.ensure_run` looks in the folder named after the
# configuration (`run_folder`: `RUNS_DIR/<preset>-dsn-seed1-<key>`, on Google Drive with
# `USE_DRIVE = True`, so it outlives the runtime that trained it) and returns the finished run without
# training. Only when it is missing does this cell train it, into the same folder, so notebooks 03, 05, 06
# and 07 find it in turn; a run that a disconnect cut off is finished first. With `CHECKPOINT` set, that
# run is used and nothing is trained.

# %%
from dsn_lab.checkpoint import load_trained_model
from dsn_lab.course import ensure_run, preset_config

local = preset_config(PRESET, variant=VARIANT, **OVERRIDES)
result = ensure_run(local, RUNS_DIR, checkpoint=CHECKPOINT, device=DEVICE)  # trains only a missing run
checkpoint = result.best_checkpoint or result.final_checkpoint
model, cfg, ckpt = load_trained_model(checkpoint, DEVICE)
cfg = cfg.replace(data_root=local.data_root)  # the data on this machine (a CHECKPOINT may come from another)
print(f"checkpoint {checkpoint} ({result.stopped}); selection {result.selection} = {result.best_metric}")

# %% [markdown]
# ## 2. Features
#
# Queries: the unseen-class sketches, encoded with the domain flag 0; gallery: the unseen-class photos,
# flag 1. `extract_features` returns the L2-normalised hashing codes (what DSN retrieves with) and caches
# them on disk under a key made of the weights, the images and the transform — a second run is instant.
# For comparison, the *frozen* row uses the pooled features of the same backbone before any training.

# %%
from dsn_lab.data import get_dataset
from dsn_lab.embed import extract_features
from dsn_lab.model import build_model

root = cfg.data_root
queries = get_dataset(cfg.dataset, root, split="zero", domain="sketch", verbose=False)
gallery = get_dataset(cfg.dataset, root, split="zero", domain="photo", verbose=False)
classes = queries.classes
cache = RUNS_DIR / "features"
embed = dict(image_size=cfg.image_size, device=DEVICE, cache_dir=cache, batch_size=64)
q_feats, q_labels = extract_features(model, queries, domain=0, **embed)
g_feats, g_labels = extract_features(model, gallery, domain=1, **embed)
print(f"queries {q_feats.shape}, gallery {g_feats.shape}, {len(classes)} unseen classes")

frozen = build_model(cfg, len(ckpt["classes"])).to(DEVICE)  # same backbone, no DSN training
fq, _ = extract_features(frozen, queries, domain=0, output="features", **embed)
fg, _ = extract_features(frozen, gallery, domain=1, output="features", **embed)

# %% [markdown]
# ## 3. Every protocol on the same features
#
# | option | DSN / SAKE (default) | ZSE-SBIR and most later papers |
# |---|---|---|
# | averaging | per class, then over classes | over queries |
# | P@K | hits in top K / min(K, gallery) | hits in top min(K, #pos) / min(K, #pos) |
# | AP | VOC interpolated | VOC interpolated |
#
# plus cosine ranking, plain (non-interpolated) AP and ITQ binary codes. With a gallery smaller than 100
# photos per class (EmojiSketch has about 6 per unseen concept), P@100 is dominated by the denominator:
# under the DSN protocol (hits in the top 100 / 100) it cannot exceed the concept's photo count / 100,
# 613 / 109 / 100 ≈ 0.056 on average over the full set's unseen concepts. That is exactly why the protocol
# must be stated next to a number.

# %% [markdown]
# ### The metrics, symbol by symbol (`dsn_lab.metrics.evaluate_retrieval`, default protocol)
#
# A query $q$ (row `i` of `q_feats`, class $y_q$ = `q_labels[i]`) ranks the gallery $\mathcal G$ of
# $N$ photos (`g_feats`, `g_labels`; $N$ = the result's `n_gallery`) by the distance
# $d(q, g) = \lVert q - g \rVert_2$ (`distance="euclidean"`; the codes are already L2-normalised by
# `extract_features`, `normalize=True` there, so this ranks as the cosine does), nearest first. Equal
# distances keep the gallery order (a stable sort: the earlier photo ranks first), so every rank is defined.
#
# - $n^+_q = |\{g \in \mathcal G : y_g = y_q\}|$, the positives of the query (a class with $n^+_q = 0$ has
#   no AP: `on_missing="error"` raises);
# - $r_1 < r_2 < \dots < r_{n^+_q}$, the 1-based ranks of the positives; $P(k) = k / r_k$, the precision at
#   the $k$-th positive.
#
# **AP over the whole ranking** (`interpolated=True`, the VOC AP of all the reference codes):
# $$\mathrm{AP}(q) = \frac{1}{n^+_q} \sum_{k=1}^{n^+_q} \max_{k' \ge k} P(k')$$
# (`interpolated=False`: $P(k)$ instead of the maximum). "@all" means no cut-off: all $N$ photos are ranked,
# every positive counts. The value of each query is `per["AP_per_query"]` (`per_query=True`).
#
# **mAP@all**, averaged per class and then over the classes (`average="class"`, DSN/SAKE):
# $$\mathrm{mAP@all} = \frac{1}{|\mathcal C|} \sum_{c \in \mathcal C} \frac{1}{|Q_c|} \sum_{q \in Q_c}
# \mathrm{AP}(q)$$
# with $\mathcal C$ the query classes and $Q_c$ the queries of class $c$ (`average="query"`:
# $\frac{1}{|Q|}\sum_q \mathrm{AP}(q)$; the same number when every class has one query, as EmojiSketch's
# one sketch per concept).
#
# **mAP@M** ($M$ in `map_at`, default 200): the same AP with only the positives in the top $M$, over
# $\min(M, n^+_q)$:
# $$\mathrm{AP@}M(q) = \frac{1}{\min(M, n^+_q)} \sum_{k:\, r_k \le M} \max_{k' \ge k,\ r_{k'} \le M} P(k'),$$
# averaged as above. With a gallery of at most $M$ photos it equals mAP@all.
#
# **P@K** ($K$ in `ks`, default (100, 200)), with `p_at_k_over="gallery"` (default):
# $$P@K(q) = \frac{|\{k : r_k \le K\}|}{\min(K, N)}$$
# — it divides by $K$ whenever the gallery has at least $K$ photos, however few positives the class has
# (hence the bound $n^+_q / K$ above). `p_at_k_over="positives"` (ZSE-SBIR) divides by
# $K_q = \min(K, n^+_q)$ and counts the hits in the top $K_q$. P@K is averaged like the AP (`average`).
#
# `dsn_lab.embed.evaluate_checkpoint` (`python -m dsn_lab evaluate`, notebook 05's `run_ablations`) uses
# exactly these defaults.

# %%
import pandas as pd

from dsn_lab.metrics import evaluate_retrieval

protocols = {
    "DSN/SAKE (default)": {},
    "per-query average": {"average": "query"},
    "ZSE-SBIR": {"average": "query", "p_at_k_over": "positives", "normalize": True},
    "cosine ranking": {"distance": "cosine"},
    "non-interpolated AP": {"interpolated": False},
    "ITQ binary codes": {"codes": "itq"},
}
rows = {}
for name, kw in protocols.items():
    r = evaluate_retrieval(q_feats, q_labels, g_feats, g_labels, **kw)
    rows[name] = {k: r[k] for k in ("mAP@all", "P@100", "mAP@200", "P@200")}
protocol_table = pd.DataFrame(rows).T.round(4)
protocol_table

# %% [markdown]
# ## 4. The paper's table and this run
#
# Paper values (mAP@all / P@100, 64-d real-valued codes; DSN, IJCAI 2021, and its parent SAKE, ICCV 2019).
# Our rows: the same protocol on EmojiSketch — the frozen backbone (its pooled features) and the trained
# checkpoint (its `cfg.hashing_dim`-d codes: 256-d for the `emoji-*` presets). Only the *gain* over the
# frozen row is meaningful across benchmarks.

# %%
from dsn_lab.course import paper_table

paper = paper_table()  # the published numbers, as the package records them (dsn_lab.embed.PAPER_RESULTS)
ours = []
for method, (qf, gf) in {
    "frozen backbone (this run)": (fq, fg),
    f"{cfg.preset} (this run)": (q_feats, g_feats),
}.items():
    r = evaluate_retrieval(qf, q_labels, gf, g_labels)
    ours.append((method, cfg.dataset, round(r["mAP@all"], 4), round(r["P@100"], 4)))
comparison = pd.concat([paper, pd.DataFrame(ours, columns=paper.columns)], ignore_index=True)
comparison

# %% [markdown]
# ## 5. Real-valued vs binary codes (ITQ)
#
# Iterative quantisation (Gong & Lazebnik 2011): PCA to $b$ dimensions, then the rotation $R$ that makes
# $\mathrm{sign}(VR)$ closest to $VR$; retrieval then ranks by Hamming distance — $b$ bits per image
# instead of $b$ floats, with $b$ = `cfg.hashing_dim` (256 for the `emoji-*` presets, 64 or 512 for the
# paper's). As in the released code, ITQ is fitted on the query codes and each set is
# centred by its own mean. The quantisation loss falls over the iterations:

# %%
from dsn_lab.metrics import itq_fit

itq = itq_fit(q_feats)  # bits = the code dimension, as released
binary_q, binary_g = itq.encode(q_feats, center="self"), itq.encode(g_feats, center="self")
print("codes:", binary_q.shape, binary_q.dtype, "values", sorted(set(binary_q.ravel().tolist())))
print(
    "quantisation loss, first / last iteration:",
    round(itq.loss_history[0], 3),
    round(itq.loss_history[-1], 3),
)
real = evaluate_retrieval(q_feats, q_labels, g_feats, g_labels)
binary = evaluate_retrieval(binary_q, q_labels, binary_g, g_labels, distance="hamming")
pd.DataFrame({f"real-valued ({q_feats.shape[1]} floats)": real, f"ITQ ({itq.bits} bits)": binary}).loc[
    ["mAP@all", "P@100", "mAP@200", "P@200"]
].round(4)

# %% [markdown]
# ### ITQ, symbol by symbol (`dsn_lab.metrics.itq_fit`, `ITQ.encode`)
#
# Fit set $X$ ($n \times D$: here `q_feats`, as `itq_fit_on="query"` in `evaluate_retrieval`), its mean
# $\mu$ (`itq.mean`), and $W$ ($D \times b$, `itq.components`): the $b$ leading eigenvectors of the
# covariance $\frac{1}{n-1}(X - \mathbf 1\mu^\top)^\top (X - \mathbf 1\mu^\top)$; $b$ = `bits`
# (`itq_bits`; default $D$ = `cfg.hashing_dim`). With $V = (X - \mathbf 1\mu^\top) W$, ITQ looks for codes
# $B \in \{-1, 1\}^{n \times b}$ and an orthogonal $R$ ($b \times b$, `itq.rotation`) minimising the
# quantisation loss
# $$\mathcal Q(B, R) = \lVert B - V R \rVert_F^2 , \qquad R^\top R = I ,$$
# by alternating `n_iter` times (`itq_iters`, 50), from $R_0$ = the left singular vectors of a Gaussian
# $b \times b$ matrix (seed `itq_seed`):
#
# 1. $B = \operatorname{sgn}(V R)$ (entries $\ge 0 \mapsto +1$), which minimises $\mathcal Q$ for fixed $R$;
# 2. the SVD $B^\top V = U S \hat V^\top$, then $R = \hat V U^\top$ (`variant="gong"`, the orthogonal
#    Procrustes solution: $\mathcal Q$ never increases). `variant="released"` sets $R = \hat V^\top U^\top$,
#    as DSN's `tool.py` reads NumPy's third SVD output as MATLAB's $V$: still orthogonal, not the
#    minimiser (and $R_0$ drawn after `np.random.seed(n_iter)`).
#
# `itq.loss_history[t]` is $\mathcal Q / n$ before the $t$-th update. A set $Y$ is encoded as
# $\operatorname{sgn}((Y - \mathbf 1\bar y^\top) W R)$ ($> 0 \mapsto +1$, else $-1$), centred by its own mean
# $\bar y$ (`center="self"`, `itq_center="each"`: the released `compressITQ`), and ranked by the Hamming
# distance $d_H(b_q, b_g) = (b - b_q^\top b_g)/2$.
#
# Which rotation: `evaluate_retrieval(codes="itq")` and `itq_fit` default to `"gong"` (this section's
# `itq_fit(q_feats)` is Gong's). The config field `cfg.itq_variant` chooses it for the binary row of
# `dsn_lab.embed.evaluate_checkpoint` and the ITQ-based selection rules; left at `None` it resolves
# through `cfg.quirk("itq_variant")`: `"released"` when `cfg.faithful`, else `"gong"`.

# %% [markdown]
# ## 6. Which unseen classes are easy, which are hard?
#
# AP of every query, averaged per class (the bars), with the mean over classes (dashed): the mAP@all of
# the default protocol. With many classes the best and worst are shown.

# %% [markdown]
# *Before you run the next cell* (Exercise 04.3): from the class names alone, which unseen classes do you
# expect to be hardest to retrieve? Write them down; you will compare them with the chart.

# %%
from dsn_lab import plots

per = evaluate_retrieval(q_feats, q_labels, g_feats, g_labels, per_query=True)
plots.plot_per_class_ap(
    per["AP_per_query"],
    q_labels,
    classes,
    title=f"AP per unseen class ({cfg.preset}, mAP@all {per['mAP@all']:.3f})",
    save_to=fig_path("per_class_ap"),
)

# %% [markdown]
# ## 7. Ranked lists
#
# A few queries and their top-8 photos, framed green when the class is right. `rank_gallery` gives the
# same order as the evaluation (ties broken by gallery index).

# %%
import numpy as np

from dsn_lab.metrics import rank_gallery

rng = np.random.default_rng(0)
picks = rng.choice(len(q_feats), min(N_SHOW, len(q_feats)), replace=False)
top = rank_gallery(q_feats[picks], g_feats, topk=8)
plots.plot_retrieval_grid(
    [queries.load_image(int(i))[0] for i in picks],
    [[gallery.load_image(int(j))[0] for j in row] for row in top],
    g_labels[top] == q_labels[picks][:, None],
    query_titles=[classes[q_labels[i]] for i in picks],
    save_to=fig_path("retrieval_examples"),
)

# %% [markdown]
# ### This run beside the full run
#
# The numbers above are those of this notebook's run (noise with QUICK). The full run (`QUICK = False`:
# notebook 03's `emoji-course` run, the full EmojiSketch) was evaluated once with
# `python scripts/course_full_runs.py`; its numbers are committed in `results/evaluation_emoji-course.json`
# and its figures in `figures/`. This run's are saved the same way (`-quick` for QUICK).

# %%
from IPython.display import display

from dsn_lab.course import beside_full_run

frozen_map = evaluate_retrieval(fq, q_labels, fg, g_labels)["mAP@all"]
class_ap = pd.Series(per["AP_per_query"]).groupby(q_labels).mean()
summary = {
    "preset": cfg.preset,
    "run": result.output_dir.name,
    "queries": len(q_labels),
    "gallery": len(g_labels),
    "mAP@all": real["mAP@all"],
    "P@100": real["P@100"],
    "mAP@all, frozen backbone": frozen_map,
    "mAP@all, ITQ": binary["mAP@all"],
    "hardest classes": [classes[int(c)] for c in class_ap.nsmallest(5).index],
    "easiest classes": [classes[int(c)] for c in class_ap.nlargest(5).index],
    "protocols": protocol_table.to_dict("index"),
}
print("saved", WS.save_result(f"evaluation_{cfg.preset}", summary))
keys = [
    "queries",
    "gallery",
    "mAP@all",
    "P@100",
    "mAP@all, frozen backbone",
    "mAP@all, ITQ",
    "hardest classes",
]
display(beside_full_run(summary, WS.full_run_result("evaluation_emoji-course"), keys, quick=QUICK))
WS.show_full_run("per_class_ap", "retrieval_examples")

# %% [markdown]
# ## 8. Exercises
#
# Each exercise: the task below, a cell tagged `exercise` to fill in (replace `None` where it says
# `# YOUR CODE HERE`), and a check cell that compares your answer with what the package computes
# (`dsn_lab.exercises`): ✓ when it agrees, ✗ with what is off, "not answered yet" while the answer is `None`.
# The answers are in `notebooks/solutions/04_evaluation_solutions.py`; try first. The definitions are in
# section 3 (metrics) and section 5 (ITQ); the exercises use this notebook's features (`q_feats`,
# `q_labels`, `g_feats`, `g_labels`), `per` (section 6) and `itq` (section 5).

# %%
from dsn_lab import exercises as ex

print(f"{len(q_feats)} queries, a gallery of {len(g_feats)} photos, {len(classes)} unseen classes")

# %% [markdown]
# ### Exercise 04.1 · One query's AP, by hand
#
# With NumPy only: the Euclidean distances from query `QUERY` to every gallery code (in float64), the
# gallery sorted nearest first (`np.argsort(..., kind="stable")`: ties keep the gallery order, as the
# evaluation), the 1-based ranks $r_k$ of the photos of the query's class, the precisions $k / r_k$, then the
# interpolated AP of section 3. The check compares with `per_query=True`'s `AP_per_query[QUERY]`
# (tolerance 1e-9) and recognises the plain, non-interpolated AP. Which positive costs the most AP?

# %% tags=["exercise"]
# Exercise 04.1
QUERY = 0  # any query index
ap_by_hand = None  # YOUR CODE HERE: the interpolated AP of query QUERY over the whole ranking

# %%
ex.check_query_ap(ap_by_hand, q_feats, q_labels, g_feats, g_labels, QUERY)

# %% [markdown]
# ### Exercise 04.2 · P@K of the same query
#
# Compute $P@K$ of query `QUERY` for each $K$ in `KS` under the default protocol (hits in the top $K$ over
# $\min(K, N)$), as `{K: value}`. Before you compute: what is $P@100$ when the gallery has fewer than 100
# photos, and what would it be over $K = 100$? The check compares with `evaluate_retrieval(..., ks=KS,
# per_query=True)` and recognises a division by $K$ or by the positives (ZSE-SBIR's protocol).

# %% tags=["exercise"]
# Exercise 04.2
KS = (5, 100)
p_at_k = None  # YOUR CODE HERE: {K: P@K of query QUERY} for K in KS

# %%
ex.check_query_precision(p_at_k, q_feats, q_labels, g_feats, g_labels, QUERY, KS)

# %% [markdown]
# ### Exercise 04.3 · The hardest unseen classes
#
# Put the classes you expected to be hardest (before section 6) in `PREDICTED_HARDEST`, then find the
# `K_HARDEST` classes with the lowest mean AP from `per["AP_per_query"]` and `q_labels` (names from
# `classes`). The check compares with `mAP_per_class` (any choice among tied classes passes) and reports how
# many of your predictions were right. What do the hardest classes have in common: few photos, an
# abstract concept, look-alikes among the training classes?

# %% tags=["exercise"]
# Exercise 04.3
K_HARDEST = min(5, max(1, len(classes) // 3))
PREDICTED_HARDEST = []  # your guess, e.g. ["ant", "bell"]: names from `classes`
hardest = None  # YOUR CODE HERE: the K_HARDEST class names with the lowest mean AP

# %%
ex.check_hardest_classes(
    hardest, q_feats, q_labels, g_feats, g_labels, classes, K_HARDEST, predicted=PREDICTED_HARDEST
)

# %% [markdown]
# ### Exercise 04.4 · The quantisation loss ITQ ends with
#
# With `itq` (section 5, fitted on `q_feats`): $V = (X - \mathbf 1\mu^\top) W$ from `itq.mean` and
# `itq.components`, $Z = V R$ with the final `itq.rotation`, $B = \operatorname{sgn}(Z)$ ($\ge 0 \mapsto +1$),
# and $\lVert B - Z \rVert_F^2 / n$. Is it below `itq.loss_history[-1]`, and why can it not be above it with
# Gong's update? The check recomputes it with `ITQ.project` (tolerance 1e-5 relative).

# %% tags=["exercise"]
# Exercise 04.4
itq_loss = None  # YOUR CODE HERE: ||B - V R||_F^2 / n on q_feats with the final rotation

# %%
ex.check_itq_loss(itq_loss, itq, q_feats)
