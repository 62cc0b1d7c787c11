# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dsn-lab/dsn-lab/blob/main/notebooks/07_retrieval_explorer.ipynb)
#
# # 07 · The retrieval explorer
#
# Query the unseen-class photo gallery with a test sketch, an image file of your own, or a drawing made
# right here; see the top-k photos, each framed green (right class) or red, with the query's AP. Switch
# between real-valued and ITQ binary codes, and between two checkpoints side by side — here the model
# before training and after.
#
# **What you should see**: the widget (in JupyterLab, Voilà or Colab; the drawing pad is a small
# anywidget, and on Colab the explorer switches on Colab's custom widget manager itself, so upload and
# draw work there too), then the same explorer driven from code: a random query, a synthetic
# "drawing", and a non-image upload that produces a message instead of a traceback. Static viewers
# (GitHub, nbviewer) show no widgets; the last cells print the results as HTML.

# %% tags=["parameters"]
QUICK = True
PRESET = "emoji-quick" if QUICK else "emoji-course"  # full: "emoji-course"
VARIANT = "tiny" if QUICK else "full"
# the training settings of notebook 03, so that its run (in RUNS_DIR, on Drive with USE_DRIVE) is reused
OVERRIDES = (
    {"steps_per_epoch": 4, "epochs": 2, "image_size": 64, "sketches_per_batch": 4, "photos_per_batch": 8}
    if QUICK
    else {}
)  # full: {}
CHECKPOINT = None  # None: 03's run (trained here if missing); or a run folder / .pt file
K = 10  # results shown per query
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
# ## 1. Two checkpoints: before and after training
#
# "After" is notebook 03's run (full DSN with the same `OVERRIDES`), reused through
# `dsn_lab.course.ensure_run`: found in its folder (`RUNS_DIR/<preset>-dsn-seed1-<key>`, on Google Drive
# with `USE_DRIVE = True`) and trained here only when it is missing; `CHECKPOINT` uses another run
# instead. "Before" is the same network untrained.

# %%
from dsn_lab.checkpoint import load_trained_model
from dsn_lab.course import ensure_run, preset_config

local = preset_config(PRESET, variant=VARIANT, **OVERRIDES)
result = ensure_run(local, RUNS_DIR, checkpoint=CHECKPOINT, device=DEVICE)  # trains only a missing run
checkpoint = result.best_checkpoint or result.final_checkpoint
model, cfg, ckpt = load_trained_model(checkpoint, DEVICE)
cfg = cfg.replace(data_root=local.data_root)  # the data on this machine (a CHECKPOINT may come from another)
print(f"checkpoint {checkpoint} ({result.stopped}); selection {result.selection} = {result.best_metric}")

# %%
from dsn_lab.data import get_dataset
from dsn_lab.model import build_model

before = build_model(cfg, len(ckpt["classes"])).to(DEVICE).eval()  # the same network, untrained
sketches = get_dataset(cfg.dataset, cfg.data_root, split="zero", domain="sketch", verbose=False)
photos = get_dataset(cfg.dataset, cfg.data_root, split="zero", domain="photo", verbose=False)
print(f"{len(sketches)} query sketches, a gallery of {len(photos)} photos, {len(photos.classes)} classes")

# %% [markdown]
# ## 2. The explorer
#
# Gallery features are computed once per checkpoint and cached on disk (so a second start is quick);
# ranking and drawing a query takes milliseconds (the time is shown under the grid).

# %%
from dsn_lab.widgets import RetrievalExplorer

explorer = RetrievalExplorer.from_models(
    {"before training": before, "DSN": model},
    sketches,
    photos,
    image_size=cfg.image_size,
    device=str(DEVICE),
    cache_dir=RUNS_DIR / "explorer",
    k=K,
    progress=False,
)
explorer

# %% [markdown]
# ## 3. The same, from code
#
# Everything the buttons do is a method: pick a random test sketch, query with any PIL image, or with
# the bytes of an uploaded file.

# %%
from IPython.display import HTML

explorer.pick_random()
for r in explorer.last_results:
    print(
        f"{r.model:16s} query class {r.query_class!r}: AP {r.ap:.3f}, {int(r.correct.sum())} of the top "
        f"{r.k} right, ranked in {r.rank_ms:.1f} ms"
    )
HTML(explorer.grid.value)

# %% [markdown]
# A "drawing": a few black strokes on white, made with PIL (in the widget you draw them with the mouse).

# %%
from PIL import Image, ImageDraw

drawing = Image.new("RGB", (224, 224), "white")
pen = ImageDraw.Draw(drawing)
pen.ellipse((50, 50, 174, 174), outline="black", width=6)
pen.line((112, 20, 112, 60), fill="black", width=6)
explorer.query_image(drawing, source="drawing", title="my drawing")
HTML(explorer.grid.value)

# %% [markdown]
# A file that is not an image gives a message in the widget, not a traceback:

# %%
ok = explorer.query_image_bytes(b"this is not a PNG", name="notes.txt")
print("accepted:", ok, "| message:", explorer.message.value)

# %% [markdown]
# ### The full run's retrieval
#
# The explorer above runs on this notebook's checkpoint (a QUICK one by default). The demo's full run
# (`make figures`): six unseen sketches with their top-8 photos, and the unseen concepts' t-SNE before
# and after DSN training (8 concepts coloured, the rest grey).

# %%
WS.show_full_run("demo_retrieval_grid", "demo_projection", command="make figures", made_here=False)

# %% [markdown]
# ## 4. Exercises
#
# Each exercise: the task below, a cell tagged `exercise` to fill in (replace `None` where it says
# `# YOUR CODE HERE`), and a check cell that compares your answer with what the package computes
# (`dsn_lab.exercises`): ✓ when it agrees, ✗ with what is off, "not answered yet" while the answer is `None`.
# The answers are in `notebooks/solutions/07_retrieval_explorer_solutions.py`; try first. The explorer ranks
# with `dsn_lab.metrics.rank_gallery` (Euclidean distance on the real-valued codes, nearest first, ties by
# gallery index); the next cell takes its codes and labels out of `explorer`.

# %%
import numpy as np

from dsn_lab import exercises as ex
from dsn_lab.metrics import rank_gallery

codes = explorer.explorer.sets["DSN"]  # the trained checkpoint's codes: test sketches and gallery photos
q_codes, g_codes = codes.queries, codes.gallery
q_labels, g_labels = explorer.explorer.query_labels, explorer.explorer.gallery_labels
per_class = np.bincount(g_labels)
print(
    f"{len(q_codes)} query codes, {len(g_codes)} gallery codes ({per_class.min()} to {per_class.max()} per class)"
)
top5 = rank_gallery(q_codes[0], g_codes, topk=5)  # what the explorer shows for sketch 0 with k = 5
print(f"sketch 0 ({q_labels[0]}): nearest photos {top5.tolist()}, of classes {g_labels[top5].tolist()}")

# %% [markdown]
# ### Exercise 07.1 · A query the model gets wrong
#
# Find, by code, a test sketch whose nearest photo (the first of `rank_gallery(q_codes[i], g_codes)`) is of
# another class. Then pick it in the explorer (its name in the list is `explorer.explorer.query_names[i]`)
# and look at the grid: is the wrong photo a look-alike, a related concept, or unrelated?

# %% tags=["exercise"]
# Exercise 07.1
wrong_query = None  # YOUR CODE HERE: the index of a test sketch whose top-1 photo is of another class

# %%
ex.check_wrong_top1(wrong_query, explorer, "DSN")

# %% [markdown]
# ### Exercise 07.2 · Where is the first right photo?
#
# For query `QUERY` (the one of 07.1 by default), the rank of the first photo of its class in the ranking of
# the whole gallery, counting from 1 (the nearest photo is rank 1). How does it compare with `K`, the number
# of photos the grid shows?

# %% tags=["exercise"]
# Exercise 07.2
QUERY = wrong_query if wrong_query is not None else 0
first_hit = None  # YOUR CODE HERE: the 1-based rank of the first photo of q_labels[QUERY]'s class

# %%
ex.check_first_hit_rank(first_hit, explorer, QUERY, "DSN")

# %% [markdown]
# ### Exercise 07.3 · How often is the first photo right, before and after training?
#
# For each checkpoint of the explorer (`explorer.explorer.model_names`: "before training" and "DSN"), the
# share of test sketches whose nearest photo is of their class. The check compares with
# `evaluate_retrieval(..., ks=(1,), average="query")`'s P@1. What does the untrained network get right, and
# why is that above zero?

# %% tags=["exercise"]
# Exercise 07.3
top1 = None  # YOUR CODE HERE: {checkpoint name: share of queries with a right top-1 photo}

# %%
ex.check_top1_accuracy(top1, explorer)
