"""What evaluating under autocast costs: fp32 features (the released protocol, the default) against the same
checkpoint embedded under bf16 autocast, scored with the same metrics on the same split.

    python benchmarks/bench_eval_amp.py runs/emoji-demo/best.pt            # CPU: bf16 autocast on the CPU
    python benchmarks/bench_eval_amp.py RUN/best.pt --device cuda          # GPU: the evaluate --amp path

On a GPU the second row is exactly what ``evaluate --amp`` computes (bf16 where supported, else fp16). On the
CPU, ``evaluate --amp`` changes nothing, so this script embeds under ``torch.autocast("cpu", bfloat16)``
instead: the same reduced precision an H100/H200 uses, on this machine's kernels.
"""

from __future__ import annotations

import argparse
import time

import torch

from dsn_lab.checkpoint import load_trained_model
from dsn_lab.data import get_dataset
from dsn_lab.data.transforms import eval_transform
from dsn_lab.embed import compute_features
from dsn_lab.metrics import evaluate_retrieval

METRICS = ("mAP@all", "P@100", "mAP@200", "P@200")


def embed_and_score(model, cfg, query, gallery, device: torch.device, reduced: bool) -> tuple[dict, float]:
    cuda = device.type == "cuda"
    tf = eval_transform(cfg.image_size)
    start = time.perf_counter()
    # on the CPU the package's AMP policy is fp32 (amp=True changes nothing there): for the CPU row, ask the
    # one embedding loop for bf16 autocast explicitly
    amp = (True if cuda else torch.bfloat16) if reduced else False
    q, ql = compute_features(model, query, domain=0, device=device, amp=amp, transform=tf)
    g, gl = compute_features(model, gallery, domain=1, device=device, amp=amp, transform=tf)
    seconds = time.perf_counter() - start
    res = evaluate_retrieval(q, ql, g, gl)
    return {k: float(res[k]) for k in METRICS}, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--split", default="zero")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    model, cfg, _ = load_trained_model(args.checkpoint, device)
    root = cfg.data_root
    query = get_dataset(cfg.dataset, root, split=args.split, domain="sketch", verbose=False)
    gallery = get_dataset(cfg.dataset, root, split=args.split, domain="photo", verbose=False)
    rows = {}
    for name, reduced in (("fp32 (default)", False), ("bf16 autocast", True)):
        rows[name] = embed_and_score(model, cfg, query, gallery, device, reduced)
    print(
        f"{args.checkpoint}: {cfg.dataset} {args.split}, {len(query)} queries x {len(gallery)} photos, "
        f"device {device}, torch {torch.__version__}"
    )
    print(f"{'features':<16}" + "".join(f"{m:>10}" for m in METRICS) + f"{'embed s':>10}")
    for name, (metrics, seconds) in rows.items():
        print(f"{name:<16}" + "".join(f"{metrics[m]:>10.4f}" for m in METRICS) + f"{seconds:>10.1f}")
    fp32, low = rows["fp32 (default)"][0], rows["bf16 autocast"][0]
    print("difference (bf16 - fp32): " + ", ".join(f"{m} {low[m] - fp32[m]:+.4f}" for m in METRICS))


if __name__ == "__main__":
    main()
