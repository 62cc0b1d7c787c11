# %% [markdown]
# # Solutions · 00 · Setup
#
# The answers to the exercises of `notebooks/00_setup` (section 7). Each `exercise` cell below replaces the
# cell of the same exercise in that notebook; it uses the notebook's variables (`HEAD_CONFIGS`,
# `STEP_CONFIGS`, `QUIRKS`), so paste it there, or run the notebook with these cells in place as CI does
# (`tests/test_exercises.py`). The checks run in strict mode: a wrong answer raises.

# %%
# ruff: noqa: F821 - the cells use the variables of the notebook they answer
from dsn_lab import exercises as ex
from dsn_lab.config import get_preset

# %% [markdown]
# ### Exercise 00.1 · Which head-bias initialisation does each config train with?
#
# The rule of `cfg.quirk`, written out: an explicit value wins; `None` takes the released value when
# `faithful` and the fixed one otherwise. The `emoji-*` presets are not faithful, so they start the heads
# from ImageNet; `faithful=True` brings back the released random biases, unless `head_bias` is set.

# %% tags=["exercise"]
# Exercise 00.1
in_force = {}
for name, cfg in HEAD_CONFIGS.items():
    released, fixed = QUIRKS["head_bias"]
    in_force[name] = cfg.head_bias if cfg.head_bias is not None else (released if cfg.faithful else fixed)
print(in_force)

# %%
ex.check_quirk_in_force(in_force, HEAD_CONFIGS, "head_bias", strict=True)

# %% [markdown]
# ### Exercise 00.2 · How many images go through the network in one training step?
#
# $(S + P)(1 + \text{views})$ with SupCon on, $S + P$ without: the `emoji-quick` step is 48 images plus 96
# views, three times the SAKE baseline's 48. One more view adds $S + P$ images a step; doubling the batch
# adds $(S + P)(1 + \text{views})$.

# %% tags=["exercise"]
# Exercise 00.2
images = {
    name: (cfg.sketches_per_batch + cfg.photos_per_batch) * (1 + cfg.augment_views * cfg.use_contrastive)
    for name, cfg in STEP_CONFIGS.items()
}
print(images)

# %%
ex.check_images_per_step(images, STEP_CONFIGS, strict=True)

# %% [markdown]
# ### Exercise 00.3 · Released versus fixed: how many behaviours differ?
#
# The raw fields differ in `faithful` and `selection` (plus names and notes), but every fidelity field left
# at `None` follows `faithful`: flipping it flips all of them whose released and fixed values differ.

# %% tags=["exercise"]
# Exercise 00.3
RELEASED, FIXED = get_preset("sketchy-s1-released"), get_preset("sketchy-s1-paper")
in_force_released, in_force_fixed = RELEASED.quirks(), FIXED.quirks()
behaviours = {k for k in in_force_released if in_force_released[k] != in_force_fixed[k]}
print(sorted(behaviours), "| raw fields:", sorted(RELEASED.diff(FIXED)))

# %%
ex.check_quirks_differ(behaviours, RELEASED, FIXED, strict=True)
