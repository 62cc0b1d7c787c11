# %% [markdown]
# # Solutions · 02 · The model and the losses
#
# The answers to the exercises of `notebooks/02_model_and_losses` (section 6). Each `exercise` cell below
# replaces the cell of the same exercise in that notebook; it uses the notebook's variables (`feats_ex`,
# `labels_ex`, `T_EX`, `bank_ex`, `mem_banks_ex`, `photo_feats_ex`, `photo_labels_ex`, `banks_ex`, …), so
# paste it there, or run the notebook with these cells in place as CI does (`tests/test_exercises.py`).
# The checks run in strict mode: a wrong answer raises.

# %%
# ruff: noqa: F821 - the cells use the variables of the notebook they answer
from dsn_lab import exercises as ex

# %% [markdown]
# ### Exercise 02.1 · SupCon by hand
#
# Anchor "view 1 of image 0" (a class-0 sketch) has 3 positives: its own view 2 and both views of the
# class-0 photo (image 4); its denominator has the 15 other views. The loop below follows the equation
# anchor by anchor; `SupConLoss` does the same with masks, in one matrix product.

# %% tags=["exercise"]
# Exercise 02.1
views = [(i, v) for v in range(feats_ex.shape[1]) for i in range(feats_ex.shape[0])]  # every view
per_anchor = []
for i, vi in views:
    z_i = feats_ex[i, vi]
    others = [(j, vj) for j, vj in views if (j, vj) != (i, vi)]
    denominator = sum(torch.exp(z_i @ feats_ex[j, vj] / T_EX) for j, vj in others)
    positives = [(j, vj) for j, vj in others if labels_ex[j] == labels_ex[i]]
    log_probs = [z_i @ feats_ex[j, vj] / T_EX - torch.log(denominator) for j, vj in positives]
    per_anchor.append(-(T_EX / 0.07) * sum(log_probs) / len(log_probs))
supcon_by_hand = float(sum(per_anchor) / len(per_anchor))
print(f"SupCon by hand: {supcon_by_hand:.4f}")

# %%
ex.check_supcon_by_hand(supcon_by_hand, feats_ex, labels_ex, T_EX, strict=True)

# %% [markdown]
# ### Exercise 02.2 · The memory loss by hand
#
# The photo of class 2 (empty) is left out: the mean runs over the 4 other photos. Averaging over all 5,
# or taking the mean of the cosines to each slot instead of the cosine to the centre, gives other values.

# %% tags=["exercise"]
# Exercise 02.2
import torch.nn.functional as F

cosines = []
for f, c in zip(photo_feats_ex, photo_labels_ex.tolist()):
    n_filled = int(bank_ex.fill[c])
    if n_filled == 0:
        continue  # an empty class has no centre: this photo does not count
    centre = bank_ex.memory[c, :n_filled].mean(0)
    cosines.append(F.cosine_similarity(f, centre, dim=0).item())
memory_loss_by_hand = 1 - sum(cosines) / len(cosines)
print(f"memory loss by hand: {memory_loss_by_hand:.4f} over {len(cosines)} photos")

# %%
ex.check_memory_loss(memory_loss_by_hand, bank_ex, photo_feats_ex, photo_labels_ex, strict=True)

# %% [markdown]
# ### Exercise 02.3 · Which slot does a new sketch replace?
#
# Against the reference `e0 + e1`, the slots of class 0 have cosines 0.71 (`e0`), 0.50 (`e0 + e2`) and 0
# (`e3`): slot 2 is the least similar, and `e1` (0.71) beats it. The fixed rule writes `memory[0, 2]`. The
# released rule writes `memory[2]`, the whole row of class **2**: its sketch `e1 + e3` and its two unused
# slots become `e1`, and class 0 keeps `e3`.

# %% tags=["exercise"]
# Exercise 02.3
changed = {"fixed": {(0, 2)}, "faithful": {(2, 0), (2, 1), (2, 2)}}

# %%
ex.check_replaced_slots(changed, banks_ex, new_sketch, new_label, reference, reference_label, strict=True)

# %% [markdown]
# ### Exercise 02.4 · The memory loss's gradient, by hand
#
# With $K'$ counted photos, $\partial \mathcal{L}_{mem}/\partial f_p = -\frac{1}{K'}\big(\bar m/(\lVert f_p
# \rVert\lVert \bar m\rVert) - \cos(f_p, \bar m)\, f_p/\lVert f_p\rVert^2\big)$ for a counted photo, 0 for
# the photo of the empty class. The released bank computes the loss on detached features: its gradient is
# zero everywhere, so with `memory_grad = False` the term never moves the network.

# %% tags=["exercise"]
# Exercise 02.4
import torch

grads_by_hand = {}
for mode, bank in mem_banks_ex.items():
    grad = torch.zeros_like(photo_feats_ex)
    counted = bank.fill[photo_labels_ex] > 0
    if not bank.detach_loss:
        for p in range(len(photo_labels_ex)):
            c = int(photo_labels_ex[p])
            if not counted[p]:
                continue
            f, centre = photo_feats_ex[p], bank.memory[c, : int(bank.fill[c])].mean(0)
            cos = (f @ centre) / (f.norm() * centre.norm())
            d_cos = centre / (f.norm() * centre.norm()) - cos * f / f.norm() ** 2
            grad[p] = -d_cos / int(counted.sum())
    grads_by_hand[mode] = grad
    print(f"{mode:8s}: gradient norm {grad.norm():.4f}, zero rows {(grad.abs().sum(1) == 0).tolist()}")

# %%
ex.check_memory_gradient(grads_by_hand, mem_banks_ex, photo_feats_ex, photo_labels_ex, strict=True)
