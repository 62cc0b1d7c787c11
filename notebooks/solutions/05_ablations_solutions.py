# %% [markdown]
# # Solutions · 05 · Ablations
#
# The answers to the exercises of `notebooks/05_ablations` (section 4). Each `exercise` cell below replaces
# the cell of the same exercise in that notebook; it uses the notebook's variables (`runs`, `table`,
# `ABLATIONS`, `plus_contrastive`, `faithful_cfg`), so paste it there, or run the notebook with these cells
# in place as CI does (`tests/test_exercises.py`). The checks run in strict mode: a wrong answer raises.

# %%
# ruff: noqa: F821 - the cells use the variables of the notebook they answer
from dsn_lab import exercises as ex

# %% [markdown]
# ### Exercise 05.1 · Mean ± std over seeds, by hand
#
# The sample standard deviation divides by $n - 1$: with one seed there is nothing to divide by, and the
# answer is NaN (pandas gives the same). NaN says "no spread measured"; 0 would claim the runs agree exactly.

# %% tags=["exercise"]
# Exercise 05.1
stats = {}
for run in ABLATIONS:
    values = runs.loc[runs["run"] == run, "mAP@all"].tolist()
    n, mean = len(values), sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else float("nan")
    stats[run] = (mean, std)
print({run: (round(m, 4), round(s, 4)) for run, (m, s) in stats.items()})

# %%
ex.check_ablation_stats(stats, runs, "mAP@all", strict=True)

# %% [markdown]
# ### Exercise 05.2 · Which term helps most?
#
# The gain of each single-term row over the baseline, from the means in `table`. A gain smaller than the
# standard deviation over seeds is not evidence. Full DSN's gain need not be the sum of the two: both terms
# pull the codes of a class's sketches and photos together, so part of what one buys the other buys too.

# %% tags=["exercise"]
# Exercise 05.2
PREDICTED = "+ contrastive"
means = table[("mAP@all", "mean")]
gains = {row: means[row] - means["SAKE baseline (CE+KD)"] for row in ("+ contrastive", "+ memory")}
helps_most = max(gains, key=gains.get)
print({row: round(g, 4) for row, g in gains.items()}, "->", helps_most)

# %%
ex.check_best_term(
    helps_most,
    table,
    "SAKE baseline (CE+KD)",
    ("+ contrastive", "+ memory"),
    predicted=PREDICTED,
    strict=True,
)

# %% [markdown]
# ### Exercise 05.3 · Why the faithful row trains like "+ contrastive"
#
# Three fields: `use_memory` (the term is on), `memory_grad=False` (it is computed on detached photo
# features) and `memory_row_overwrite=True` (the released bank update). A loss of detached features has no
# gradient with respect to the weights: it adds a constant to the logged total and nothing to the update,
# so the weights follow the same path as "+ contrastive"'s, whatever the bank holds.

# %% tags=["exercise"]
# Exercise 05.3
changed = set(plus_contrastive.diff(faithful_cfg))
print(plus_contrastive.diff(faithful_cfg))

# %%
ex.check_changed_fields(changed, plus_contrastive, faithful_cfg, strict=True)
