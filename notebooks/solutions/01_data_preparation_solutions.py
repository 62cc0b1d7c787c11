# %% [markdown]
# # Solutions · 01 · Data
#
# The answers to the exercises of `notebooks/01_data_preparation` (section 8). Each `exercise` cell below
# replaces the cell of the same exercise in that notebook; it uses the notebook's variables (`datasets`,
# `DATA_ROOT`, `course_cfg`, `loader`), so paste it there, or run the notebook with these cells in place as
# CI does (`tests/test_exercises.py`). The checks run in strict mode: a wrong answer raises.

# %%
# ruff: noqa: F821 - the cells use the variables of the notebook they answer
from dsn_lab import exercises as ex

# %% [markdown]
# ### Exercise 01.1 · Photos per unseen concept
#
# `np.bincount` over the labels, named by the class list. The fewest photos means the fewest relevant
# items per query: one misplaced photo moves that class's AP a lot.

# %% tags=["exercise"]
# Exercise 01.1
photo_zero = datasets["zero", "photo"]
counts = np.bincount(photo_zero.labels, minlength=len(photo_zero.classes))
photos_per_class = {name: int(n) for name, n in zip(photo_zero.classes, counts)}
print(sorted(photos_per_class.items(), key=lambda kv: kv[1])[:5])

# %%
ex.check_photos_per_class(photos_per_class, DATA_ROOT, split="zero", strict=True)

# %% [markdown]
# ### Exercise 01.2 · Near-duplicates by name
#
# A whole-word match: the term, an optional plural "s", and no letter or digit on either side. On the full
# EmojiSketch the rule matches a few training concepts (`computer_mouse` for `mouse`, `bell_pepper` for
# `bell`, …): homonyms the builder keeps on purpose (`NOT_NEAR_DUPLICATES`), since a computer mouse does
# not look like the animal.

# %% tags=["exercise"]
# Exercise 01.2
import re

from dsn_lab.data.emojisketch import NOT_NEAR_DUPLICATES, sketchy_terms

name_overlaps = set()
for concept in datasets["train", "sketch"].classes:
    words = concept.replace("_", " ")
    for unseen_class in datasets["zero", "sketch"].classes:
        for term in sketchy_terms(unseen_class):
            if re.search(rf"(?<![a-z0-9]){re.escape(term)}s?(?![a-z0-9])", words):
                name_overlaps.add((concept, unseen_class))
print(sorted(name_overlaps))
print("on the allow list:", sorted(c for c, _ in name_overlaps if c.replace("_", " ") in NOT_NEAR_DUPLICATES))

# %%
ex.check_name_overlaps(name_overlaps, DATA_ROOT, strict=True)

# %% [markdown]
# ### Exercise 01.3 · Does every sketch see a positive?
#
# Class-aligned: 1.0 by construction (each sketch comes with photos of its own concept). Random: close to
# $1 - (1 - 1/C)^P$, printed beside it (few batches, so not exactly).

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
positive_fraction = {}
for sampler, batches in {"class_aligned": loader, "random": random_loader}.items():
    hits = total = 0
    for _, b in zip(range(N_BATCHES), batches):
        photo_labels = set(b["photo_label"].tolist())
        hits += sum(label in photo_labels for label in b["sketch_label"].tolist())
        total += len(b["sketch_label"])
    positive_fraction[sampler] = hits / total
n_classes = len(datasets["train", "sketch"].classes)
print(positive_fraction, "formula for random:", round(1 - (1 - 1 / n_classes) ** 4, 3))

# %%
ex.check_sketch_positives(
    positive_fraction, {"class_aligned": loader, "random": random_loader}, N_BATCHES, strict=True
)
