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
# 3. every loss as an equation, each symbol mapped to its config field and the function computing it,
#    then evaluated on toy tensors; SupCon's similarity matrix with its positives marked;
# 4. the sketch memory bank filling up step by step, drawn slot by slot;
# 5. the two quirks of the released code, side by side with the corrected version — above all,
#    **the released memory loss has zero gradient**, shown with autograd;
# 6. four exercises with checks: SupCon and the memory loss by hand, which slot a new sketch replaces,
#    and the memory loss's gradient.
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
# ## 3. The objective, term by term
#
# One training step (`dsn_lab.step.dsn_step`, the function the trainer calls) minimises
#
# $$\mathcal{L} = w_{ce}\,\mathcal{L}_{CE} + w_{kd}\,\mathcal{L}_{KD} + w_{con}\,\mathcal{L}_{SupCon}
# + w_{mem}\,\mathcal{L}_{mem}$$
#
# over a batch of $S$ sketches and $P$ photos, each also seen in augmented views. A term switched off
# (`use_kd`, `use_contrastive`, `use_memory` = False) is not computed at all (KD is also skipped when
# `w_kd = 0`). Each symbol, its field of `DSNConfig` (`dsn_lab/config.py`) and where it is computed:
#
# | symbol | what it is | config field | computed by |
# |---|---|---|---|
# | $w_{ce}, w_{kd}, w_{con}, w_{mem}$ | weight of each term | `w_ce`, `w_kd`, `w_contrastive`, `w_memory` | `step.dsn_step` (the weighted sum) |
# | $S$, $P$ | sketches, photos per batch | `sketches_per_batch`, `photos_per_batch` | the paired loader |
# | $\ell_i$, $y_i$ | class logits of image $i$ (from its code), its label among the $C$ seen classes | `classifier_scale` (None: linear, $s$: $s\cos(w_c, h_i)$) | `DSNModel.forward` |
# | $d_i$ | domain flag, 0 sketch, 1 photo | — | the domain column of `dsn_step` |
# | $q_i$, $t_i$ | student's KD distribution (softmax of its KD head), teacher's ImageNet logits | `teacher` | `DSNOutput.kd_logits`, `model.build_teacher` |
# | $\lambda$ | scale of the teacher logits | `kd_lambda` | `losses.sake_kd_loss` |
# | $\beta$, $m_{c}$ | weight of, and row $c$ of, the WordNet `cid_mask` | `kdneg` | `sake_kd_loss`; the table: `semantics.cid_mask_for` |
# | $\sum_i d_i$ | rows KD averages over | `kd_domains` (`"photo"`: $d_i$; `"both"`: every row) | `dsn_step` |
# | $z_i$ | L2-normalised code of one augmented view | `augment_views`, `contrastive_dim` (a projection head first) | `dsn_step` |
# | $\tau$, $\tau_b$ | SupCon temperature, base temperature (0.07, fixed as released) | `temperature` | `losses.SupConLoss` |
# | $f_i$ | pooled backbone feature | `backbone` | `DSNOutput.features` |
# | $K$, $\bar m_c$ | sketch slots per class, centre of class $c$'s filled slots | `memory_slots` | `memory.SketchMemory` |
# | — | gradient of $\mathcal{L}_{mem}$; where a replacement is written | `memory_grad`, `memory_row_overwrite` (follow `faithful`) | `SketchMemory(detach_loss=…, faithful=…)` |
#
# ### Cross-entropy
#
# On the class logits of the *un-augmented* sketches and photos together ($N = S + P$ images):
#
# $$\mathcal{L}_{CE} = -\frac{1}{N}\sum_{i=1}^{N}\log\frac{\exp \ell_{i,y_i}}{\sum_{c=1}^{C}\exp \ell_{i,c}}$$
#
# `F.cross_entropy(logits[:n], labels)` in `dsn_step`.
#
# ### Supervised contrastive loss (SupCon, Khosla et al. 2020)
#
# On the L2-normalised codes $z$ of two augmented views of every sketch and photo (positives: same class,
# whatever the domain), with temperature $\tau = 0.07$:
#
# $$\mathcal{L}_{SupCon} = \frac{1}{|A|}\sum_{i\in A} \frac{-\tau/\tau_b}{|P(i)|}\sum_{p\in P(i)}
# \log\frac{\exp(z_i\cdot z_p/\tau)}{\sum_{a\neq i}\exp(z_i\cdot z_a/\tau)}$$
#
# Every view of every image is an anchor $i$; $P(i)$ are the other views with its label (the other view of
# the same image, and every view of the other images of its class, sketch or photo); the denominator runs
# over all views but $i$ itself; $A$ are the anchors with at least one positive. $\tau$ is `temperature`;
# the base temperature $\tau_b$ stays 0.07 whatever `temperature` is (the released code passes only
# `--temperature`), so another $\tau$ also rescales the term. `losses.SupConLoss`, called in `dsn_step` on
# the codes `code[n:]` of the views.
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
# **The matrix SupCon reads.** Rows are anchors, columns the views they are compared with, in blocks:
# sketches (view 1, view 2) then photos. Circles mark each anchor's positives, crosses the anchor itself
# (left out of the denominator). The clustered features: every circle sits on a dark red cell (cosine near
# 1), whatever the block — a sketch's positives include the photos of its class. The bars on the right are
# each anchor's term; their mean is the loss printed above. Try `value="softmax"` to see the probabilities
# $\exp(z_i\cdot z_a/\tau)/\sum_{a'\neq i}\exp(z_i\cdot z_{a'}/\tau)$ whose logs the loss averages.

# %%
from dsn_lab.plots import plot_supcon_similarity

domains = torch.tensor([0, 1, 0, 1, 0, 1])  # sketch, photo of each class
plot_supcon_similarity(clustered, labels, domains, temperature=0.07)

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
# sketches; `kd_domains = "both"` averages over all $N$ rows instead). $\lambda$ is `kd_lambda`, $\beta$
# is `kdneg` (0: plain distillation), $t_i$ the frozen teacher's logits on the same un-augmented image,
# $m_{c_i}$ the `cid_mask` row of its class (`dsn_step` indexes the $[C, 1000]$ table by label).
# `losses.sake_kd_loss(student, teacher, domain, cid_rows, kd_lambda, kdneg)` computes it. Changing a
# sketch's student logits leaves the loss unchanged:

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
# over the photos $P'$ whose class has entries, with $\bar m_c = \frac{1}{n_c}\sum_{j < n_c} M_{c,j}$ the
# mean of the $n_c$ filled slots of class $c$ (the bank $M$ is $C \times K \times$ feature size, $K$ =
# `memory_slots`). While a class has free slots, new sketches go in; once it is full, a new sketch replaces
# the stored one *least* similar to this batch's mean photo of the class, if it is more similar. The bank
# is flushed every epoch (`memory_flush`). `SketchMemory.update` (the un-augmented pooled sketch
# features, the batch's photos as the reference) and `SketchMemory.loss` compute it, both called in
# `dsn_step`; `memory_grad` decides whether $f_p$ keeps its gradient, `memory_row_overwrite` which cell a
# replacement is written to (section 5).
#
# A toy bank: 3 classes, 2 slots, 4-d features. Each cell of the figure is a slot, labelled with the
# sketch it holds (pink: filled, in the centre); an outline marks what an update changed.

# %%
import copy

from dsn_lab.memory import SketchMemory
from dsn_lab.plots import plot_memory_bank

e = torch.eye(4)
names = {f"e{i}": e[i] for i in range(4)}  # label the slots by the sketch they hold
bank = SketchMemory(num_classes=3, slots=2, dim=4)
empty = copy.deepcopy(bank)
photos, photo_labels = torch.stack([e[0] + e[1], e[2]]), torch.tensor([0, 1])
bank.update(torch.stack([e[0], e[3]]), torch.tensor([0, 0]), photos, photo_labels)
step1 = copy.deepcopy(bank)
bank.update(torch.stack([e[1]]), torch.tensor([0]), photos, photo_labels)
plot_memory_bank(
    {"step 1: e0, e3 of class 0": step1, "step 2: e1 of class 0": bank},
    {"step 1: e0, e3 of class 0": empty, "step 2: e1 of class 0": step1},
    names=names,
)

# %% [markdown]
# Step 1: two sketches of class 0 fill its two free slots (blue: added). Step 2: class 0 is full, so the
# new sketch `e1` competes with the stored ones for this batch's photo of class 0, `e0 + e1`: `e3`
# (cosine 0) is the least similar and `e1` (cosine 0.71) beats it, so `e1` replaces `e3` (orange).

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
before = {mode: copy.deepcopy(bank) for mode, bank in banks.items()}
for bank in banks.values():
    bank.update(torch.stack([e[1]]), torch.tensor([0]), photos, photo_labels)
plot_memory_bank(banks, before, names=names, title="the third update (e1 of class 0), two rules")

# %% [markdown]
# In the faithful bank, slot 1 of class 0 (the least similar, `e3`) was meant to be replaced; instead
# the whole row of class **1** was overwritten with `e1`, erasing class 1's sketch `e2` (orange), and
# `e1` also went into class 1's unused slot (grey: beyond its fill count, so not in its centre), while
# class 0 keeps `e3`. The fixed bank replaces exactly slot 1 of class 0.
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
# ### Does the memory bank help? Three seeds on EmojiSketch v2
#
# The memory loss acts on the spread of a class's sketches, which needs several sketches per class:
# EmojiSketch v2 has them. The ladder SAKE objective → + SupCon → + memory bank (fixed and faithful), each
# row three seeds of the `emoji-course` recipe (100 steps), unseen mAP@all and, over training, the sketch
# dispersion the memory bank is meant to shrink. Here it does not help: the numbers say so.

# %%
WS.show_full_run(
    "emojisketch_v2_ablation",
    "emojisketch_v2_dispersion",
    command="python benchmarks/ablation_emojisketch_v2.py (two workers, then --report)",
    made_here=False,
)

# %% [markdown]
# ## 6. Exercises
#
# Each exercise: the task below, a cell tagged `exercise` to fill in (replace `None` where it says
# `# YOUR CODE HERE`), and a check cell that compares your answer with what the package computes
# (`dsn_lab.exercises`): ✓ when it agrees, ✗ with what is off, "not answered yet" while the answer is `None`.
# The answers are in `notebooks/solutions/02_model_and_losses_solutions.py`; try first. Write the
# losses yourself here (loops or tensor operations, `torch.nn.functional.cosine_similarity` allowed), not
# with the package's classes: the checks call those.

# %%
from dsn_lab import exercises as ex

# %% [markdown]
# ### Exercise 02.1 · SupCon by hand
#
# Compute SupCon from its equation (section 3) for the batch below: `feats_ex`, the L2-normalised codes of
# 8 images (4 classes, a sketch and a photo of each) in 2 views, shape `[8, 2, 16]`, labels `labels_ex`,
# at $\tau$ = `T_EX` = 0.1 (so the factor $\tau/\tau_b$, $\tau_b = 0.07$, matters). First list, for anchor
# "view 1 of image 0", its positives and the terms of its denominator. The check compares with
# `SupConLoss(T_EX, base_temperature=0.07)` (tolerance 1e-4 relative) and recognises the usual slips; the
# figure after it shows the matrix and each anchor's term.

# %%
g_ex = torch.Generator().manual_seed(2)
labels_ex = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
domains_ex = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])  # four sketches, then four photos
class_dirs = torch.randn(4, 16, generator=g_ex)
noise = 0.8 * torch.randn(8, 2, 16, generator=g_ex)
feats_ex = F.normalize(class_dirs[labels_ex][:, None, :] + noise, dim=-1)  # [8, 2, 16]
T_EX = 0.1

# %% tags=["exercise"]
# Exercise 02.1
supcon_by_hand = None  # YOUR CODE HERE: SupCon of feats_ex, labels_ex at T_EX, written from the equation

# %%
ex.check_supcon_by_hand(supcon_by_hand, feats_ex, labels_ex, T_EX)

# %%
plot_supcon_similarity(feats_ex, labels_ex, domains_ex, temperature=T_EX)

# %% [markdown]
# ### Exercise 02.2 · The memory loss by hand
#
# A bank of 3 classes × 3 slots of 6-d sketch features, filled by one update: class 0 holds 3 sketches,
# class 1 one, class 2 none. Five photo features `photo_feats_ex` with labels `photo_labels_ex` (one of
# class 2). Compute $\mathcal{L}_{mem}$ (section 4) for them from `bank_ex.memory` and `bank_ex.fill`:
# the centre of a class is the mean of its filled slots; a photo whose class is empty does not count. The
# check compares with `bank_ex.loss(...)` (tolerance 1e-5) and recognises the usual slips.

# %%
g_mem = torch.Generator().manual_seed(3)
sketches_ex, sketch_labels_ex = torch.randn(4, 6, generator=g_mem), torch.tensor([0, 0, 1, 0])
mem_banks_ex = {mode: SketchMemory(3, 3, 6, faithful=(mode == "faithful")) for mode in ("fixed", "faithful")}
for bank in mem_banks_ex.values():  # the same state in both: free slots only, so no replacement
    bank.update(sketches_ex, sketch_labels_ex, sketches_ex[:1], sketch_labels_ex[:1])
bank_ex = mem_banks_ex["fixed"]
photo_feats_ex = torch.randn(5, 6, generator=g_mem)
photo_labels_ex = torch.tensor([0, 1, 2, 0, 1])
plot_memory_bank(bank_ex, title="bank_ex (each filled slot: its cosine to the class centre)")

# %% tags=["exercise"]
# Exercise 02.2
memory_loss_by_hand = None  # YOUR CODE HERE: 1 - mean cos(photo, centre of its class) over the counted photos

# %%
ex.check_memory_loss(memory_loss_by_hand, bank_ex, photo_feats_ex, photo_labels_ex)

# %% [markdown]
# ### Exercise 02.3 · Which slot does a new sketch replace?
#
# Two banks in the same state (the figure): the faithful (released) rule and the fixed one. Class 0 is
# full. One more update arrives: the sketch `e1` of class 0, with the photo `e0 + e1` of class 0 as the
# reference. Predict, **without running the update**, which cells `(class, slot)` of `bank.memory` change
# in each bank: compare the cosines of the stored sketches and of `e1` with the reference, then apply
# each rule (section 5). Answer `{"faithful": {(class, slot), ...}, "fixed": {...}}`; the check runs the
# update on copies of the banks and compares (exact); the figure after it shows what happened.

# %%
banks_ex = {mode: SketchMemory(3, 3, 4, faithful=(mode == "faithful")) for mode in ("faithful", "fixed")}
stored = torch.stack([e[0], e[0] + e[2], e[3], e[2], e[1] + e[3]])
stored_labels = torch.tensor([0, 0, 0, 1, 2])
for bank in banks_ex.values():  # free slots only: both rules give the same state
    bank.update(stored, stored_labels, e[:1], torch.tensor([0]))
new_sketch, new_label = e[1][None], torch.tensor([0])
reference, reference_label = (e[0] + e[1])[None], torch.tensor([0])
names_ex = {"e0": e[0], "e0+e2": e[0] + e[2], "e3": e[3], "e2": e[2], "e1+e3": e[1] + e[3], "e1": e[1]}
plot_memory_bank(banks_ex, names=names_ex, title="before the update")

# %% tags=["exercise"]
# Exercise 02.3
changed = None  # YOUR CODE HERE: {"faithful": {(class, slot), ...}, "fixed": {(class, slot), ...}}

# %%
ex.check_replaced_slots(changed, banks_ex, new_sketch, new_label, reference, reference_label)

# %%
after_ex = {mode: copy.deepcopy(bank) for mode, bank in banks_ex.items()}
for bank in after_ex.values():
    bank.update(new_sketch, new_label, reference, reference_label)
plot_memory_bank(after_ex, banks_ex, names=names_ex, title="after the update: what changed")

# %% [markdown]
# ### Exercise 02.4 · The memory loss's gradient, by hand
#
# Section 5 showed with autograd that the released memory loss passes no gradient. Derive the gradient
# of $\mathcal{L}_{mem}$ with respect to each photo feature $f_p$ yourself (hint:
# $\partial \cos(f, c)/\partial f = c/(\lVert f\rVert\,\lVert c\rVert) - \cos(f, c)\, f/\lVert f\rVert^2$,
# and the loss is a mean over the counted photos $P'$), and compute it, without autograd, for the photos
# of exercise 02.2 in both banks of `mem_banks_ex` (same state; `bank.detach_loss` tells whether a bank's
# loss is computed on detached features). Answer `{"fixed": [5, 6] tensor, "faithful": [5, 6] tensor}`.
# Which rows are zero, and why? The check compares with autograd (tolerance 1e-5 + 1e-4 relative).

# %% tags=["exercise"]
# Exercise 02.4
grads_by_hand = None  # YOUR CODE HERE: {"fixed": d loss / d photo_feats_ex, "faithful": ...}, [5, 6] each

# %%
ex.check_memory_gradient(grads_by_hand, mem_banks_ex, photo_feats_ex, photo_labels_ex)

# %% [markdown]
# **Next:** `03_training` puts these pieces into the training loop.
