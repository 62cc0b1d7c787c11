# %% [markdown]
# # Solutions · 03 · Training
#
# The answers to the exercises of `notebooks/03_training` (section 7). Each `exercise` cell below replaces
# the cell of the same exercise in that notebook; it uses the notebook's variables (`result`, and `model`,
# `run_cfg`, `batch` from the cell that opens section 7), so paste it there, or run the notebook with these
# cells in place as CI does (`tests/test_exercises.py`). The checks run in strict mode: a wrong answer
# raises.

# %%
# ruff: noqa: F821 - the cells use the variables of the notebook they answer
from dsn_lab import exercises as ex

# %% [markdown]
# ### Exercise 03.1 · The total that train logs
#
# $\mathcal L = w_{ce}\,\mathrm{CE} + w_{kd}\,\mathrm{KD} + w_{con}\,\mathrm{SupCon} + w_{mem}\,\mathrm{memory}$,
# over the terms the run has. With the paper's $w_{con} = 0.1$ the SupCon term would count a tenth as much.

# %% tags=["exercise"]
# Exercise 03.1
row = [r for r in result.history if r["kind"] == "step"][-1]  # the last logged step
print({k: round(v, 4) for k, v in row.items() if k.startswith("loss")})
total_by_hand = sum(
    getattr(run_cfg, f"w_{term}") * row[f"loss_{term}"]
    for term in ("ce", "kd", "contrastive", "memory")
    if f"loss_{term}" in row
)

# %%
ex.check_logged_total(total_by_hand, row, run_cfg, strict=True)

# %% [markdown]
# ### Exercise 03.2 · The CE term of one step, by hand
#
# In eval mode BatchNorm uses its running statistics, so the logits of the un-augmented images do not
# depend on the views that share the forward pass in `dsn_step`.

# %% tags=["exercise"]
# Exercise 03.2
import torch
import torch.nn.functional as F

images = torch.cat([batch["sketch"], batch["photo"]])
domain = torch.cat([torch.zeros(len(batch["sketch"])), torch.ones(len(batch["photo"]))])[:, None]
labels = torch.cat([batch["sketch_label"], batch["photo_label"]])
with torch.no_grad():
    class_logits = model(images, domain)[0]
ce_by_hand = F.cross_entropy(class_logits, labels)
print(f"CE by hand: {ce_by_hand.item():.4f}")

# %%
ex.check_ce_term(ce_by_hand, model, batch, run_cfg, strict=True)

# %% [markdown]
# ### Exercise 03.3 · SupCon against its temperature
#
# A small $T$ sharpens the softmax over similarities (hard negatives dominate); the $T/0.07$ factor
# rescales the loss, so values at different $T$ are comparable only as a trend.

# %% tags=["exercise"]
# Exercise 03.3
import matplotlib.pyplot as plt

from dsn_lab.losses import SupConLoss

z, z_labels = ex.supcon_inputs(model, batch, run_cfg)  # [N, views, D]: what dsn_step gives SupCon
TEMPERATURES = [0.03, 0.05, 0.07, 0.1, 0.2, 0.5, 1.0]
with torch.no_grad():
    sweep = [SupConLoss(temperature=t, base_temperature=0.07)(z, z_labels).item() for t in TEMPERATURES]
fig, ax = plt.subplots(figsize=(4.5, 3))
ax.plot(TEMPERATURES, sweep, "o-")
ax.axvline(run_cfg.temperature, color="grey", ls=":", label=f"training T = {run_cfg.temperature}")
ax.set(xscale="log", xlabel="temperature T", ylabel="SupCon loss (one batch)")
ax.legend()
plt.show()

# %%
ex.check_temperature_sweep(sweep, z, z_labels, TEMPERATURES, strict=True)

# %% [markdown]
# ### Exercise 03.4 · The cosine learning-rate schedule
#
# The logged `lr` of a row is the one set before that row's optimiser step, so a row at step $k$ shows
# the multiplier of step $k - 1$ (a little lower when the time budget ran ahead of the steps).

# %% tags=["exercise"]
# Exercise 03.4
import math

K = result.planned_steps
lr_by_hand = [0.5 * (1 + math.cos(math.pi * k / K)) for k in range(K + 1)]
logged = [(r["step"] - 1, r["lr"] / run_cfg.lr) for r in result.history if r["kind"] == "step"]
fig, ax = plt.subplots(figsize=(4.5, 3))
ax.plot(range(K + 1), lr_by_hand, label="by hand")
ax.plot(*zip(*logged), "o", label="logged lr / run_cfg.lr")
ax.set(xlabel="optimiser step", ylabel="lr multiplier")
ax.legend()
plt.show()

# %%
ex.check_lr_schedule(lr_by_hand, run_cfg, result.planned_steps, strict=True)
