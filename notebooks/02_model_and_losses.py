# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dsn-lab/dsn-lab/blob/main/notebooks/02_model_and_losses.ipynb)
#
# # 02 · The model and the losses, piece by piece
#
# DSN = a **CSE-ResNet50** backbone (SE-ResNet50 whose squeeze-and-excitation gates also see a
# *domain flag*: 0 sketch, 1 photo), a **hashing layer** (2048 → d, the retrieval code), a classifier and
# an ImageNet **knowledge-distillation head**; trained with the paper's weights
#
# $$\mathcal{L} = \mathcal{L}_{CE} + 1.0\,\mathcal{L}_{KD} + 0.1\,\mathcal{L}_{SupCon} + 1.0\,\mathcal{L}_{mem}$$
#
# (the course's CPU presets, `emoji-*`, raise the SupCon weight to 1.0: notebook 05).
#
# **What you should see**
#
# 1. the conditional SE block's source, and that flipping the domain flag changes the features;
# 2. the output heads and their shapes;
# 3. each loss evaluated on toy tensors next to its formula;
# 4. the sketch memory bank filling up step by step;
# 5. the two quirks of the released code, side by side with the corrected version — above all,
#    **the released memory loss has zero gradient**, shown with autograd.
#
# Everything runs on the CPU in well under a minute (random weights, small images).

# %% tags=["parameters"]
QUICK = True  # CPU-sized: random weights, 64 px images
IMAGE_SIZE = 64 if QUICK else 224  # full: 224 (the paper's size)
PRETRAINED = False  # full: True (ImageNet SE-ResNet50 weights from the hub; needs internet)
HASHING_DIM = 64  # 64 or 512, the two rows of the paper
NUM_CLASSES = 10  # full: 100 (Sketchy split 1 training classes)
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
import torch

from dsn_lab.course import pick_device

DEVICE = pick_device(seed=0)  # CUDA when there is one; on the CPU, at most 4 threads

# %% [markdown]
# ### The map: one forward pass, four losses
#
# Before the pieces, where they sit. One forward pass runs over the un-augmented sketches (flag $d = 0$),
# the photos ($d = 1$) and two augmented views of each; each loss reads a different output of it: CE the
# class logits of the un-augmented images, KD the KD-head logits of the photos against the frozen ImageNet
# teacher, SupCon the L2-normalised codes of the augmented views, the memory term the pooled features.
# Each orange box names its config weight (`w_*`) and the function that computes it; the sections below
# open them one at a time. Drawn by the package from this notebook's config
# (`figures/dsn_architecture.png` is the same figure without one).

# %%
from dsn_lab.config import get_preset
from dsn_lab.plots import plot_architecture

plot_architecture(cfg=get_preset("sketchy-s1-released", hashing_dim=HASHING_DIM, image_size=IMAGE_SIZE))

# %% [markdown]
# ## 1. CSE-ResNet50: a domain flag inside every SE block
#
# A squeeze-and-excitation (SE) block rescales the channels of a feature map $x \in \mathbb{R}^{C\times H
# \times W}$ by gates computed from its global average $z = \mathrm{GAP}(x)$:
# $s = \sigma(W_2\,\delta(W_1 z))$. The **conditional** SE block of CSE-ResNet50 appends the domain flag
# $d \in \{0, 1\}$ to the hidden vector: $s = \sigma(W_2\,[\delta(W_1 z);\, d])$ — so the same backbone can
# gate channels differently for sketches and for photos. When ImageNet weights are loaded, the extra
# column of $W_2$ starts at zero (the network starts as plain SE-ResNet50) and training learns it.
#
# The source, from the package:

# %%
import inspect

import dsn_lab.model as model_lib

print(inspect.getsource(model_lib.CSEModule))
print(inspect.getsource(model_lib.CSEBottleneck.forward))

# %%
from dsn_lab.model import cse_resnet50_dsn

model = cse_resnet50_dsn(hashing_dim=HASHING_DIM, num_classes=NUM_CLASSES, pretrained=PRETRAINED)
model = model.to(DEVICE).eval()
n_params = sum(p.numel() for p in model.parameters())
print(
    f"{type(model).__name__}: {n_params / 1e6:.1f} M parameters | backbone {model.backbone_name} | "
    f"feature_dim {model.feature_dim} | hashing_dim {model.hashing_dim} | classes {model.num_classes}"
)

# %% [markdown]
# The forward pass takes the images **and** the domain: an int for the whole batch, or one flag per
# image. It returns a `DSNOutput` with four tensors.

# %%
x = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, device=DEVICE)
with torch.no_grad():
    out_sketch = model(x, 0)
    out_photo = model(x, 1)
    out_mixed = model(x, torch.tensor([0, 1, 0, 1], device=DEVICE))
for field, value in out_sketch._asdict().items():
    print(f"{field:10s} {tuple(value.shape)}")


# %% [markdown]
# **What changes when the flag flips?** At initialisation, nothing: every flag column of `fc2` starts at
# zero (with ImageNet weights, so that the network *is* the ImageNet SE-ResNet50; with random weights
# too), so sketches and photos are encoded identically. Training gives those columns weight. The second
# cell emulates that by setting them to small random values (what a trained model has learnt, roughly):
# now the same images give different features depending on the flag.


# %%
def rel_change(a, b):
    return ((a - b).norm() / a.norm()).item()


for field in ("features", "code"):
    print(
        f"{field:9s}: relative change sketch -> photo = "
        f"{rel_change(getattr(out_sketch, field), getattr(out_photo, field)):.3f}"
    )

# %%
g_flag = torch.Generator().manual_seed(0)
with torch.no_grad():
    for m in model.modules():
        if isinstance(m, model_lib.CSEModule):
            m.fc2.weight[:, -1] = 0.5 * torch.randn(m.fc2.out_features, generator=g_flag)
    out_sketch, out_photo = model(x, 0), model(x, 1)
    out_mixed = model(x, torch.tensor([0, 1, 0, 1], device=DEVICE))  # one flag per image
for field in ("features", "code"):
    print(
        f"{field:9s}: relative change sketch -> photo = "
        f"{rel_change(getattr(out_sketch, field), getattr(out_photo, field)):.3f}  (flag columns set)"
    )
same = torch.allclose(out_mixed.code[1::2], out_photo.code[1::2], atol=1e-4) and torch.allclose(
    out_mixed.code[0::2], out_sketch.code[0::2], atol=1e-4
)
print("a batch with per-image flags gives the per-domain results:", same)

# %% [markdown]
# ## 2. The heads
#
# * **hashing layer** `2048 → d`: the code used for retrieval (real-valued; binarised with ITQ in
#   notebook 04). The paper reports $d = 64$ and $d = 512$.
# * **classifier** `d → C`: cross-entropy over the seen training classes.
# * **KD head** `d → 1000`: predicts the frozen ImageNet teacher's distribution (SAKE's distillation), so
#   the ImageNet knowledge is not forgotten. With ImageNet weights, the hashing layer and the KD head are
#   initialised from an SVD of the ImageNet classifier.

# %%
for name, module in model.named_children():
    n = sum(p.numel() for p in module.parameters())
    print(f"{name:12s} {type(module).__name__:20s} {n:>12,d} parameters")

# %% [markdown]
# ## 3. The losses on toy tensors
#
# ### Supervised contrastive loss (SupCon, Khosla et al. 2020)
#
# On the L2-normalised codes $z$ of two augmented views of every sketch and photo (positives: same class,
# whatever the domain), with temperature $\tau = 0.07$:
#
# $$\mathcal{L}_{SupCon} = \frac{1}{|A|}\sum_{i\in A} \frac{-1}{|P(i)|}\sum_{p\in P(i)}
# \log\frac{\exp(z_i\cdot z_p/\tau)}{\sum_{a\neq i}\exp(z_i\cdot z_a/\tau)}$$
#
# It pulls same-class sketches and photos together and pushes other classes apart: the main tool DSN
# uses to *smooth the domain gap*. Below: well-clustered features give a much lower loss than random ones.

# %%
import torch.nn.functional as F

from dsn_lab.losses import SupConLoss

supcon = SupConLoss(temperature=0.07)
g = torch.Generator().manual_seed(0)
labels = torch.tensor([0, 0, 1, 1, 2, 2])  # 3 classes, e.g. a sketch and a photo of each
centres = F.normalize(torch.randn(3, 16, generator=g), dim=1)
clustered = F.normalize(centres[labels][:, None, :] + 0.1 * torch.randn(6, 2, 16, generator=g), dim=-1)
random_feats = F.normalize(torch.randn(6, 2, 16, generator=g), dim=-1)
print(f"SupCon, features clustered by class: {supcon(clustered, labels).item():.3f}")
print(f"SupCon, random features:             {supcon(random_feats, labels).item():.3f}")

# %% [markdown]
# ### SAKE knowledge distillation
#
# The student's KD head $q = \mathrm{softmax}(\text{student logits})$ learns the teacher's ImageNet
# distribution, nudged towards the ImageNet classes that WordNet relates to the sample's class $c$
# (`cid_mask`, notebook 01):
#
# $$\mathcal{L}_{KD} = \frac{1}{\sum_i d_i}\sum_i d_i \sum_{k=1}^{1000}
# -\,\mathrm{softmax}\big(\lambda\, t_i + \beta\, m_{c_i}\big)_k \log q_{ik},\qquad \lambda = 1,\ \beta = 0.3$$
#
# where $d_i$ is the domain flag: as in the released code, **only photos** count (the teacher never saw
# sketches). Changing a sketch's student logits leaves the loss unchanged:

# %%
from dsn_lab.losses import sake_kd_loss

n = 4
domain = torch.tensor([0, 0, 1, 1])  # two sketches, two photos
student = torch.randn(n, 1000, generator=g)
teacher = torch.randn(n, 1000, generator=g)
cid_rows = torch.zeros(n, 1000)
cid_rows[:, :5] = 1.0  # pretend the class is related to ImageNet classes 0..4
base = sake_kd_loss(student, teacher, domain, cid_rows)
student_sketch_changed = student.clone()
student_sketch_changed[0] += 10 * torch.randn(1000, generator=g)
changed = sake_kd_loss(student_sketch_changed, teacher, domain, cid_rows)
print(f"KD loss: {base.item():.4f}; after changing a sketch's logits: {changed.item():.4f}")
print(
    f"student = teacher on the photos -> loss equals the target's entropy: "
    f"{sake_kd_loss(teacher, teacher, domain, None).item():.4f}"
)

# %% [markdown]
# ### The whole step: `dsn_lab.step.dsn_losses`
#
# One call computes every term of one paired batch exactly as the released training step routes it —
# and it is the function the training loop itself calls, so what you see here is what trains:
#
# - **one forward** over `[sketch, photo, sketch_v1, photo_v1, sketch_v2, photo_v2]` with the domain flag
#   column (0 sketch, 1 photo), so BatchNorm sees the whole batch;
# - **CE** on the class logits of the *un-augmented* sketches and photos; **KD** on their KD logits against
#   the frozen teacher (photos only, `kd_domains`);
# - **SupCon** on the L2-normalised *hashing codes* of the two augmented views;
# - the **memory bank** updated with the un-augmented *pooled* sketch features, then
#   $1-\cos$(photo feature, sketch centre of its class), detached in the released code (`memory_grad`).
#
# The total is $\mathcal{L}_{CE} + w_{kd}\mathcal{L}_{KD} + w_{con}\mathcal{L}_{SupCon} +
# w_{mem}\mathcal{L}_{mem}$ with the config's weights, by default the paper's `w_kd = 1.0`,
# `w_contrastive = 0.1`, `w_memory = 1.0` (the `emoji-*` presets: `w_contrastive = 1.0`). The source of
# the step:

# %%
import inspect

import dsn_lab.step as step_lib

print(inspect.getsource(step_lib.dsn_step))

# %%
import pandas as pd

from dsn_lab.config import get_preset
from dsn_lab.memory import SketchMemory
from dsn_lab.model import build_teacher
from dsn_lab.step import dsn_losses

cfg = get_preset("sketchy-s1-released", hashing_dim=HASHING_DIM, pretrained=PRETRAINED)
print("quirks in force (faithful=True):", cfg.quirks())
SIZE = 64  # small random images: this cell shows the routing, not a result
labels_s, labels_p = torch.tensor([0, 1]), torch.tensor([0, 1])
images = lambda n: torch.randn(n, 3, SIZE, SIZE, generator=g)  # noqa: E731
batch = {
    "sketch": images(2),
    "photo": images(2),
    "sketch_label": labels_s,
    "photo_label": labels_p,
    "sketch_views": [images(2), images(2)],
    "photo_views": [images(2), images(2)],
}
# The frozen ImageNet teacher needs the hub's weights; offline (PRETRAINED = False) the model's own
# KD head stands in for it, which is enough to see the routing.
teacher = build_teacher(cfg) or (lambda x, d: model(x, d)[1])
memory = SketchMemory(NUM_CLASSES, cfg.memory_slots, model.feature_dim, faithful=True).to(DEVICE)
cid_rows = torch.zeros(NUM_CLASSES, 1000, device=DEVICE)  # notebook 01 shows the real WordNet table
with torch.no_grad():
    losses = dsn_losses(model, batch, cfg, teacher=teacher, memory=memory, cid_mask=cid_rows)
weights = {"ce": cfg.w_ce, "kd": cfg.w_kd, "contrastive": cfg.w_contrastive, "memory": cfg.w_memory}
table = pd.DataFrame(
    [
        {"term": k, "value": v.item(), "weight": weights[k], "weighted": weights[k] * v.item()}
        for k, v in losses.items()
        if k != "total"
    ]
).set_index("term")
table.loc["total"] = {"value": float("nan"), "weight": float("nan"), "weighted": losses["total"].item()}
table.round(4)

# %% [markdown]
# ## 4. The sketch memory bank, step by step
#
# DSN keeps, per seen class, up to `slots` (10) pooled **sketch** features, and pulls every photo towards
# the centre of its class's sketches:
#
# $$\mathcal{L}_{mem} = 1 - \frac{1}{|P'|}\sum_{p\in P'} \cos\big(f_p,\ \bar m_{c_p}\big)$$
#
# over the photos $P'$ whose class has entries. While a class has free slots, new sketches go in; once
# it is full, a new sketch replaces the stored one *least* similar to this batch's mean photo of the class,
# if it is more similar. The bank is flushed every epoch.
#
# A toy bank: 3 classes, 2 slots, 4-d features.

# %%
from dsn_lab.memory import SketchMemory


def show(bank, title):
    centres, valid = bank.centers()
    print(f"--- {title}: fill per class {bank.fill.tolist()}")
    for c in range(bank.num_classes):
        print(
            f"  class {c}: slots {bank.memory[c].numpy().round(2).tolist()}  centre "
            f"{centres[c].numpy().round(2).tolist() if valid[c] else '-'}"
        )


e = torch.eye(4)
bank = SketchMemory(num_classes=3, slots=2, dim=4)
photos, photo_labels = torch.stack([e[0] + e[1], e[2]]), torch.tensor([0, 1])
bank.update(torch.stack([e[0], e[3]]), torch.tensor([0, 0]), photos, photo_labels)
show(bank, "step 1: two sketches of class 0 fill its two slots")
bank.update(torch.stack([e[1]]), torch.tensor([0]), photos, photo_labels)
show(bank, "step 2: class 0 is full; the new sketch e1 is closer to class 0's photo (e0+e1) than e3")

# %% [markdown]
# ## 5. Faithful vs fixed: two quirks of the released code
#
# `SketchMemory(..., faithful=True)` reproduces the released `MemoryStore` exactly; `faithful=False`
# (the default) is the corrected method.
#
# **Quirk 1 — the replacement goes to the wrong row.** The released code writes the replacement to
# `memory[slot_index]` — the whole row of *class number* `slot_index` — instead of
# `memory[class, slot_index]`. Same steps as above, three classes; watch class 1:

# %%
banks = {
    mode: SketchMemory(num_classes=3, slots=2, dim=4, faithful=(mode == "faithful"))
    for mode in ("faithful", "fixed")
}
for bank in banks.values():
    bank.update(torch.stack([e[0], e[3]]), torch.tensor([0, 0]), photos, photo_labels)
    bank.update(torch.stack([e[2]]), torch.tensor([1]), photos, photo_labels)
    bank.update(torch.stack([e[1]]), torch.tensor([0]), photos, photo_labels)
for mode, bank in banks.items():
    show(bank, mode)

# %% [markdown]
# In the faithful bank, slot 1 of class 0 (the least similar, `e3`) was meant to be replaced; instead
# the whole row of class **1** was overwritten with `e1`, erasing class 1's sketch `e2`, while class 0
# keeps `e3`.
#
# **Quirk 2 — the released memory loss has no gradient.** The released code computes the loss on
# *detached* features: it adds a constant to the total and never moves the network. Autograd shows it:

# %%
feats = torch.randn(2, 4, generator=g, requires_grad=True)  # two photo features (classes 0 and 1)
for mode, bank in banks.items():
    loss = bank.loss(feats, photo_labels)
    if loss.requires_grad:
        (grad,) = torch.autograd.grad(loss, feats)
        print(f"{mode:8s}: loss {loss.item():.3f}, gradient norm {grad.norm().item():.3f}")
    else:
        print(f"{mode:8s}: loss {loss.item():.3f}, requires_grad=False -> gradient is exactly zero")

# %% [markdown]
# The same seen from a whole step: the gradient of `CE + memory` equals the gradient of `CE` alone with
# the faithful bank, and differs with the fixed one.

# %%
head = torch.nn.Linear(4, 2)  # stands in for the network's last layer
x_in = torch.randn(2, 4, generator=g)
for mode, bank in banks.items():
    head.zero_grad()
    f = x_in @ head.weight.T @ head.weight  # features depending on the weights
    ce = F.cross_entropy(head(f), photo_labels)
    ce_grad = torch.autograd.grad(ce, head.weight, retain_graph=True)[0]
    total = ce + bank.loss(f, photo_labels)
    total_grad = torch.autograd.grad(total, head.weight)[0]
    print(f"{mode:8s}: |grad(CE + memory) - grad(CE)| = {(total_grad - ce_grad).norm().item():.4f}")

# %% [markdown]
# The released DSN therefore trained **without** an effective memory loss; its reported gains come from
# the other terms. Notebook 05 trains both versions (`memory_grad`, `memory_row_overwrite`) and compares them.
# The quirk is also in the source:

# %%
print(inspect.getsource(SketchMemory.loss))

# %% [markdown]
# **Next:** `03_training` puts these pieces into the training loop.
