# %% [markdown]
# # Solutions · 07 · The retrieval explorer
#
# The answers to the exercises of `notebooks/07_retrieval_explorer` (section 4). Each `exercise` cell below
# replaces the cell of the same exercise in that notebook; it uses the notebook's variables (`q_codes`,
# `g_codes`, `q_labels`, `g_labels`, `explorer`), so paste it there, or run the notebook with these cells in
# place as CI does (`tests/test_exercises.py`). The checks run in strict mode: a wrong answer raises.

# %%
# ruff: noqa: F821 - the cells use the variables of the notebook they answer
import numpy as np

from dsn_lab import exercises as ex
from dsn_lab.metrics import rank_gallery

# %% [markdown]
# ### Exercise 07.1 · A query the model gets wrong
#
# `rank_gallery` ranks several queries at once (`[n, dim]` in, `[n, k]` out): the top-1 of every sketch in
# one call, then the first whose photo has another label.

# %% tags=["exercise"]
# Exercise 07.1
top1_photo = rank_gallery(q_codes, g_codes, topk=1)[:, 0]
wrong = np.flatnonzero(g_labels[top1_photo] != q_labels)
wrong_query = int(wrong[0])
print(f"{len(wrong)} of {len(q_codes)} sketches have a wrong top-1; the first: {wrong_query}")
print("pick it in the explorer:", explorer.explorer.query_names[wrong_query])

# %%
ex.check_wrong_top1(wrong_query, explorer, "DSN", strict=True)

# %% [markdown]
# ### Exercise 07.2 · Where is the first right photo?
#
# The whole ranking (no `topk`), the labels in that order, the first position holding the query's label,
# plus 1. Beyond `K` the grid shows no right photo at all, though the AP still counts every one.

# %% tags=["exercise"]
# Exercise 07.2
QUERY = wrong_query
order = rank_gallery(q_codes[QUERY], g_codes)
first_hit = int(np.flatnonzero(g_labels[order] == q_labels[QUERY])[0]) + 1
print(f"query {QUERY}: first right photo at rank {first_hit} (the grid shows {K})")

# %%
ex.check_first_hit_rank(first_hit, explorer, QUERY, "DSN", strict=True)

# %% [markdown]
# ### Exercise 07.3 · How often is the first photo right, before and after training?
#
# The same top-1 test for each checkpoint's codes. The untrained network is above zero because its backbone
# is pretrained on ImageNet: sketches and photos of one concept already share some features.

# %% tags=["exercise"]
# Exercise 07.3
top1 = {}
for name in explorer.explorer.model_names:
    fs = explorer.explorer.sets[name]
    nearest = rank_gallery(fs.queries, fs.gallery, topk=1)[:, 0]
    top1[name] = float((g_labels[nearest] == q_labels).mean())
print(top1)

# %%
ex.check_top1_accuracy(top1, explorer, strict=True)
