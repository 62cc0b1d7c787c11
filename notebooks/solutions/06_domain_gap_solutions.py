# %% [markdown]
# # Solutions · 06 · Domain gap
#
# The answers to the exercises of `notebooks/06_domain_gap` (section 6). Each `exercise` cell below
# replaces the cell of the same exercise in that notebook; it uses the notebook's variables
# (`sketch_feats`, `sketch_labels`, `photo_feats`, `photo_labels` from the cell that opens section 6), so
# paste it there, or run the notebook with these cells in place as CI does (`tests/test_exercises.py`).
# The checks run in strict mode: a wrong answer raises.

# %%
# ruff: noqa: F821 - the cells use the variables of the notebook they answer
import numpy as np

from dsn_lab import exercises as ex

# %% [markdown]
# ### Exercise 06.1 · The centroid distance, by hand
#
# In float64, as `domain_gap` computes. The overall means can coincide while every class sits apart from
# its photos (or the reverse): retrieval ranks photos per query, so the class-wise distance is the one that
# matters.

# %% tags=["exercise"]
# Exercise 06.1
s_unit = sketch_feats.astype(np.float64)
s_unit /= np.linalg.norm(s_unit, axis=1, keepdims=True)
p_unit = photo_feats.astype(np.float64)
p_unit /= np.linalg.norm(p_unit, axis=1, keepdims=True)
shared = sorted(set(sketch_labels.tolist()) & set(photo_labels.tolist()))
centroid_distance = float(
    np.mean(
        [
            np.linalg.norm(s_unit[sketch_labels == c].mean(0) - p_unit[photo_labels == c].mean(0))
            for c in shared
        ]
    )
)
print(f"{centroid_distance:.4f} over {len(shared)} classes")

# %%
ex.check_centroid_distance(
    centroid_distance, sketch_feats, sketch_labels, photo_feats, photo_labels, strict=True
)

# %% [markdown]
# ### Exercise 06.2 · Sketch and photo dispersion
#
# EmojiSketch v1 has one sketch per concept: no class has two sketches, the sketch dispersion is NaN, and
# DSN's second claim (less intra-class diversity of sketches) cannot be measured on it; EmojiSketch v2 or
# Sketchy can. (This cell and 06.4 reuse `s_unit`, `p_unit` from 06.1.)

# %% tags=["exercise"]
# Exercise 06.2
dispersion = {}
for domain, x, lab in (("sketch", s_unit, sketch_labels), ("photo", p_unit, photo_labels)):
    spreads = [
        np.linalg.norm(x[lab == c] - x[lab == c].mean(0), axis=1).mean()
        for c in np.unique(lab)
        if (lab == c).sum() >= 2
    ]
    dispersion[domain] = float(np.mean(spreads)) if spreads else float("nan")
print(dispersion)

# %%
ex.check_dispersion(dispersion, sketch_feats, sketch_labels, photo_feats, photo_labels, strict=True)

# %% [markdown]
# ### Exercise 06.3 · RBF MMD² on a small subset
#
# A very small $\sigma$ makes $k(a, b) \approx 0$ for every distinct pair, a very large one $\approx 1$:
# either way the three kernel means cancel, and the estimate tells nothing. The median heuristic puts
# $\sigma$ where distances vary.

# %% tags=["exercise"]
# Exercise 06.3
N_MMD = 100
x_s = sketch_feats[:N_MMD] / np.linalg.norm(sketch_feats[:N_MMD], axis=1, keepdims=True)
x_p = photo_feats[:N_MMD] / np.linalg.norm(photo_feats[:N_MMD], axis=1, keepdims=True)
z = np.concatenate([x_s, x_p]).astype(np.float64)
n, m = len(x_s), len(x_p)
d2 = np.maximum(((z[:, None, :] - z[None, :, :]) ** 2).sum(-1), 0.0)
sigma = np.sqrt(np.median(d2[np.triu_indices(n + m, k=1)]))  # distinct pairs only, as rbf_mmd2
k = np.exp(-d2 / (2 * sigma**2))
k_ss, k_pp, k_sp = k[:n, :n], k[n:, n:], k[:n, n:]
mmd2_by_hand = float(
    (k_ss.sum() - np.trace(k_ss)) / (n * (n - 1))
    + (k_pp.sum() - np.trace(k_pp)) / (m * (m - 1))
    - 2 * k_sp.mean()
)
print(f"MMD² {mmd2_by_hand:.5f}, sigma {sigma:.4f}")

# %%
ex.check_mmd2(mmd2_by_hand, x_s, x_p, strict=True)

# %% [markdown]
# ### Exercise 06.4 · Does the nearest photo have the sketch's class?
#
# It is P@1 of notebook 04, averaged over the sketches instead of per class (the same number when every
# class has one sketch).

# %% tags=["exercise"]
# Exercise 06.4
# squared distances from the dot products: no [sketches, photos, D] array
sq = (s_unit**2).sum(1)[:, None] + (p_unit**2).sum(1)[None, :] - 2 * s_unit @ p_unit.T
nearest = sq.argmin(1)
nn_agreement = float((photo_labels[nearest] == sketch_labels).mean())
print(f"{nn_agreement:.3f} of {len(sketch_labels)} sketches")

# %%
ex.check_nn_agreement(nn_agreement, sketch_feats, sketch_labels, photo_feats, photo_labels, strict=True)
