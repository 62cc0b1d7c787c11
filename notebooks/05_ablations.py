# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dsn-lab/dsn-lab/blob/main/notebooks/05_ablations.ipynb)
#
# # 05 · Ablations: what does each part of DSN add?
#
# DSN extends SAKE (CE + semantic-aware distillation) with a cross-modal supervised contrastive loss and
# a category-specific sketch memory. The ladder trained here:
#
# | run | loss | changes |
# |---|---|---|
# | SAKE baseline | CE + KD | `use_contrastive=False, use_memory=False` |
# | + contrastive | CE + KD + w·SupCon (w = 0.1 in the paper presets, 1.0 in the `emoji-*` ones) | `use_memory=False` |
# | + memory | CE + KD + 1.0·memory | `use_contrastive=False` |
# | full DSN | all four | — |
# | full DSN, faithful memory | the released memory bank: its loss has no gradient and a replacement overwrites a whole bank row (notebook 02) | `memory_grad=False, memory_row_overwrite=True` |
# | full DSN, 512-d | a 512-d code instead of the preset's `hashing_dim` (256 vs 512 for the `emoji-*` presets; 64 vs 512, the paper's two rows, for the paper presets) | `hashing_dim=512` |
#
# Every run uses the same preset, data and seed(s) and is scored with the default protocol (mAP@all,
# P@100) on the unseen classes. Read P@100 with notebook 04's caveat: the DSN protocol divides the hits
# in the top 100 by 100, and EmojiSketch has only about 6 photos per unseen concept, so P@100 cannot
# exceed 613 / 109 / 100 ≈ 0.056 on average on the full set, and the rows differ in it by little in
# absolute terms: compare them by mAP@all. The `emoji-*` presets change three things for small CPU
# batches, each measured on the held-out *training* concepts (see `dsn_lab/config.py`): SupCon weight
# 1.0, frozen BatchNorm statistics and a cosine classifier (`classifier_scale=16`); they also train with
# class-aligned batches (notebook 01) and 256-d codes.
#
# **What you should see**: a results table (mean ± std over seeds when there are several) and a bar
# chart, saved to `figures/`. With `QUICK = True` every run is a few steps long: the pipeline runs end to
# end in CI, but the numbers are noise. The full settings (`QUICK = False`: the `emoji-course` preset,
# three seeds; ≈ 6 minutes per run on a 2-core CPU, far less on a GPU) give the comparison.
#
# **Runs reused**: the "full DSN" row at seed 1 is notebook 03's run, and the "SAKE baseline" row is the
# baseline notebook 06 uses: every run lives in a folder named after its configuration
# (`dsn_lab.course.run_folder`), so a run another notebook trained with the same `PRESET` and `OVERRIDES`
# is only evaluated here, and this notebook trains only the runs that are missing.

# %% tags=["parameters"]
QUICK = True
PRESET = "emoji-quick" if QUICK else "emoji-course"  # full: "emoji-course" (or a paper preset on a GPU)
VARIANT = "tiny" if QUICK else "full"
# notebook 03's training settings: its run is the "full DSN" row at seed 1
OVERRIDES = (
    {"steps_per_epoch": 4, "epochs": 2, "image_size": 64, "sketches_per_batch": 4, "photos_per_batch": 8}
    if QUICK
    else {}
)  # full: {}
SEEDS = (1,) if QUICK else (1, 2, 3)  # full: three seeds
ABLATIONS = {
    "SAKE baseline (CE+KD)": {"use_contrastive": False, "use_memory": False},
    "+ contrastive": {"use_memory": False},
    "+ memory": {"use_contrastive": False},
    "full DSN": {},
    "full DSN, faithful memory": {"memory_grad": False, "memory_row_overwrite": True},  # notebook 02
    "full DSN, 512-d": {"hashing_dim": 512},
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
# ## 1. Train every run
#
# `dsn_lab.course.run_ablations` trains every row of `ABLATIONS` for every seed on top of the preset and
# scores it on the unseen classes (`dsn_lab.embed.evaluate_checkpoint`, the default protocol). Each run
# is `dsn_lab.course.ensure_run`'s: its folder, `RUNS_DIR/<preset>-<losses>-seed<k>-<key>`, is named after
# its configuration, and a finished run is not trained again. So notebook 03's run (full DSN, seed 1), and
# the baseline when notebook 06 trained it first, are evaluated, not retrained; this cell can be re-run,
# and it continues after a disconnect. The `train seconds` column is near 0 for a reused run. On a GPU the full ladder with a paper
# preset takes hours: run it overnight, or one row at a time from the command line.

# %%
from dsn_lab.course import preset_config, run_ablations

base = preset_config(PRESET, variant=VARIANT, **OVERRIDES)
runs = run_ablations(base, ABLATIONS, RUNS_FROM or RUNS_DIR, seeds=SEEDS, device=DEVICE)
runs.drop(columns="checkpoint").round(4)

# %% [markdown]
# ## 2. The table
#
# Mean over seeds (± standard deviation when there are several). Read a row against the one above it:
# that difference is what the added term buys.
#
# The faithful row sets exactly two fields, `memory_grad=False` and `memory_row_overwrite=True`; it does
# not set `faithful=True`, so on an `emoji-*` or `*-paper` preset (`faithful=False`) every other quirk
# keeps its corrected value, the head-bias initialisation included (`head_bias` stays `"imagenet"`). The
# cell below lists every quirk in force (`cfg.quirks()`) for both rows. The faithful memory loss has no
# gradient, so that row should look like "+ contrastive". (On a `*-released` preset, `faithful=True`
# already gives full DSN the released memory, so the two rows coincide.)

# %%
import pandas as pd

faithful_cfg = base.replace(**ABLATIONS["full DSN, faithful memory"])
pd.DataFrame({"full DSN": base.quirks(), "full DSN, faithful memory": faithful_cfg.quirks()})

# %%
from dsn_lab.course import ablation_table

table = ablation_table(runs, order=list(ABLATIONS)).round(4)
table

# %% [markdown]
# ## 3. The chart

# %%
from dsn_lab import plots

plots.plot_ablations(
    table,
    title=f"Ablations ({PRESET})",
    xlabel=f"mAP@all on the unseen classes ({base.dataset}, {len(SEEDS)} seed(s))",
    save_to=fig_path("ablations"),
)

# %% [markdown]
# ### This run beside the full run
#
# The full run (`QUICK = False`: the `emoji-course` preset on the full EmojiSketch, every row with seeds 1,
# 2 and 3: 18 runs, of which notebooks 03 and 06 train two) is made with `make course-results`
# (`python scripts/course_full_runs.py`; about 8 minutes per run on a 2-core CPU); its table goes to
# `results/ablations_emoji-course.json` and its chart to `figures/ablations.png`, committed in the
# repository once made (the cell below says when a clone does not have them yet). Each cell is the mean ±
# standard deviation over seeds of mAP@all on the unseen classes.

# %%
from IPython.display import display

from dsn_lab.course import beside_full_run


def mean_pm_std(row) -> str:
    std = row[("mAP@all", "std")]
    return f"{row[('mAP@all', 'mean')]:.3f}" + ("" if pd.isna(std) else f" ± {std:.3f}")


summary = {
    "preset": PRESET,
    "seeds": list(SEEDS),
    "mAP@all": {run: mean_pm_std(row) for run, row in table.iterrows()},
    "table": {run: {f"{m} {s}": row[(m, s)] for m, s in table.columns} for run, row in table.iterrows()},
    "runs": runs.drop(columns="checkpoint").to_dict("records"),
}
print("saved", WS.save_result(f"ablations_{PRESET}", summary))
full = WS.full_run_result("ablations_emoji-course")
display(beside_full_run(summary["mAP@all"], full and full["mAP@all"], list(ABLATIONS), quick=QUICK))
WS.show_full_run("ablations")

# %% [markdown]
# ## 4. Exercises
#
# Each exercise: the task below, a cell tagged `exercise` to fill in (replace `None` where it says
# `# YOUR CODE HERE`), and a check cell that compares your answer with what the package computes
# (`dsn_lab.exercises`): ✓ when it agrees, ✗ with what is off, "not answered yet" while the answer is `None`.
# The answers are in `notebooks/solutions/05_ablations_solutions.py`; try first. They use `runs` (section 1:
# one row per run and seed), `table` (section 2), `base` and `ABLATIONS`. With `QUICK = True` the numbers
# are noise and there is one seed; the reasoning is the same with the full settings.

# %%
from dsn_lab import exercises as ex

print(f"{len(runs)} runs: {runs['run'].nunique()} rows x {runs['seed'].nunique()} seed(s)")

# %% [markdown]
# ### Exercise 05.1 · Mean ± std over seeds, by hand
#
# From `runs` only (not `table`): for every row of `ABLATIONS`, the mean and the standard deviation of
# `mAP@all` over its seeds, as `{run: (mean, std)}`. Use the sample standard deviation (divide by
# $n - 1$, pandas' default): what is it with a single seed, and why is that more honest than 0? The check
# compares with `dsn_lab.course.ablation_table(runs)` (tolerance 1e-9).

# %% tags=["exercise"]
# Exercise 05.1
stats = None  # YOUR CODE HERE: {run: (mean mAP@all, std mAP@all)} for each run in ABLATIONS

# %%
ex.check_ablation_stats(stats, runs, "mAP@all")

# %% [markdown]
# ### Exercise 05.2 · Which term helps most?
#
# Put your guess in `PREDICTED` first. Then, from `table`, the row among "+ contrastive" and "+ memory"
# whose mean mAP@all gains most over the SAKE baseline. Is the gain larger than the spread over seeds (with
# one seed you cannot tell)? Does full DSN gain the sum of the two?

# %% tags=["exercise"]
# Exercise 05.2
PREDICTED = None  # your guess before you compute: "+ contrastive" or "+ memory"
helps_most = None  # YOUR CODE HERE: "+ contrastive" or "+ memory", from table's mAP@all means

# %%
ex.check_best_term(
    helps_most, table, "SAKE baseline (CE+KD)", ("+ contrastive", "+ memory"), predicted=PREDICTED
)

# %% [markdown]
# ### Exercise 05.3 · Why the faithful row trains like "+ contrastive"
#
# `plus_contrastive` and `faithful_cfg` (section 2) are the configs of two rows. Give the config fields in
# which they differ (the check compares with `plus_contrastive.diff(faithful_cfg)` and shows what each field
# resolves to). Then say why three changed fields give the same gradients: what is the gradient of a loss
# computed on detached features, and what does a constant added to the loss change?

# %%
plus_contrastive = base.replace(**ABLATIONS["+ contrastive"])

# %% tags=["exercise"]
# Exercise 05.3
changed = None  # YOUR CODE HERE: the set of field names in which faithful_cfg differs from plus_contrastive

# %%
ex.check_changed_fields(changed, plus_contrastive, faithful_cfg)
