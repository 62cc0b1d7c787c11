# %% [markdown]
# # Solutions · 04 · Evaluation
#
# The answers to the exercises of `notebooks/04_evaluation` (section 8). Each `exercise` cell below
# replaces the cell of the same exercise in that notebook; it uses the notebook's variables (`q_feats`,
# `q_labels`, `g_feats`, `g_labels`, `classes`, `per`, `itq`), so paste it there, or run the notebook with
# these cells in place as CI does (`tests/test_exercises.py`). The checks run in strict mode: a wrong answer
# raises.

# %%
# ruff: noqa: F821 - the cells use the variables of the notebook they answer
import numpy as np

from dsn_lab import exercises as ex

# %% [markdown]
# ### Exercise 04.1 · One query's AP, by hand
#
# Reversing the precisions, a running maximum and reversing back gives $\max_{k' \ge k} P(k')$ for every
# $k$ at once. The distances in float64, as the evaluation ranks them: in float32 two nearly equal
# distances may swap.

# %% tags=["exercise"]
# Exercise 04.1
QUERY = 0
dist = np.linalg.norm(g_feats.astype(np.float64) - q_feats[QUERY].astype(np.float64), axis=1)
order = np.argsort(dist, kind="stable")  # nearest first, ties in gallery order
ranks = np.flatnonzero(g_labels[order] == q_labels[QUERY]) + 1  # 1-based ranks of the positives
precision = np.arange(1, len(ranks) + 1) / ranks  # P(k) = k / r_k
ap_by_hand = float(np.maximum.accumulate(precision[::-1])[::-1].mean())
print(f"positives at ranks {ranks.tolist()}: P(k) {precision.round(3).tolist()}, AP {ap_by_hand:.4f}")

# %%
ex.check_query_ap(ap_by_hand, q_feats, q_labels, g_feats, g_labels, QUERY, strict=True)

# %% [markdown]
# ### Exercise 04.2 · P@K of the same query
#
# With a gallery of $N < K$ photos the whole gallery is in the top $K$, so $P@K = n^+_q / N$: every
# positive is found, and the value says more about the class's share of the gallery than about the model.
# (`ranks` from 04.1.)

# %% tags=["exercise"]
# Exercise 04.2
KS = (5, 100)
p_at_k = {K: int((ranks <= K).sum()) / min(K, len(g_feats)) for K in KS}
print(p_at_k, f"(gallery of {len(g_feats)}, {len(ranks)} positives)")

# %%
ex.check_query_precision(p_at_k, q_feats, q_labels, g_feats, g_labels, QUERY, KS, strict=True)

# %% [markdown]
# ### Exercise 04.3 · The hardest unseen classes
#
# The mean AP of each class's queries (per-class averaging, as mAP@all), sorted ascending.

# %% tags=["exercise"]
# Exercise 04.3
K_HARDEST = min(5, max(1, len(classes) // 3))
PREDICTED_HARDEST = []  # your guess, made before section 6
ap = per["AP_per_query"]
mean_ap = {classes[c]: float(ap[q_labels == c].mean()) for c in np.unique(q_labels)}
hardest = sorted(mean_ap, key=mean_ap.get)[:K_HARDEST]
print({c: round(mean_ap[c], 3) for c in hardest})

# %%
ex.check_hardest_classes(
    hardest,
    q_feats,
    q_labels,
    g_feats,
    g_labels,
    classes,
    K_HARDEST,
    predicted=PREDICTED_HARDEST,
    strict=True,
)

# %% [markdown]
# ### Exercise 04.4 · The quantisation loss ITQ ends with
#
# `loss_history[-1]` is the loss before the last update; the update solves the Procrustes problem for the
# codes of that step, so with Gong's rotation the final loss is at most that value (equal once the codes
# stop changing).

# %% tags=["exercise"]
# Exercise 04.4
V = (q_feats.astype(np.float64) - itq.mean) @ itq.components
Z = V @ itq.rotation
B = np.where(Z >= 0, 1.0, -1.0)
itq_loss = float(((B - Z) ** 2).sum() / len(Z))
print(
    f"final {itq_loss:.4f}, before the last update {itq.loss_history[-1]:.4f}, start {itq.loss_history[0]:.4f}"
)

# %%
ex.check_itq_loss(itq_loss, itq, q_feats, strict=True)
