"""Benchmark of category name association: how many proposals are really training categories.

For two training vocabularies (COCO panoptic's 133 classes, and a 20-class list of common things and
stuff), the embedded `embedding` backend proposes N novel categories twice in one run, side by side:
- `before`: the lexical screen off (DREAMMASK_CNA_LEXICAL_SCREEN=false: members, compound tails and the
  embedding-similarity thresholds only, ranked by nearest-category cosine; the behaviour before WordNet);
- `after`: the shared lexical screen (WordNet) and the usefulness ranking.
Each proposal is judged by the labelled list bench/cna_labels.tsv, written by hand (one line per name
and vocabulary: `train` when annotators of that vocabulary would label the object as one of its classes,
i.e. a synonym, spelling variant, sub-type, generalisation or clear part of one; `novel` otherwise),
checked against COCO's class definitions and LVIS's WordNet synsets. A proposal missing from the list is
counted as unlabelled, never as novel. Also counted: duplicates among the proposals (two names that
label the same thing, by the list's `same_as` column), and seconds to associate.

    python bench/cna.py [--num 100]
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VOCAB_20 = ["person", "car", "bicycle", "dog", "cat", "chair", "table", "bottle", "cup", "book", "tree", "grass",
            "sky", "road", "building", "water", "bed", "window", "door", "lamp"]


def load_labels(path: Path) -> dict[tuple[str, str], dict]:
    out = {}
    with open(path, encoding="utf-8") as fh:
        for row in csv.DictReader((line for line in fh if not line.startswith("#")), delimiter="\t"):
            out[(row["vocabulary"], row["name"])] = row
    return out


def judge(names: list[str], vocab: str, labels: dict) -> dict:
    train = novel = unlabelled = 0
    seen_as: dict[str, str] = {}
    duplicates, unl, train_names = [], [], []
    for n in names:
        row = labels.get((vocab, n))
        if row is None:
            unlabelled += 1
            unl.append(n)
            continue
        if row["label"] == "train":
            train += 1
            train_names.append(n)
        else:
            novel += 1
        key = row.get("same_as") or n
        if key in seen_as:
            duplicates.append(f"{n} = {seen_as[key]}")
        seen_as.setdefault(key, n)
    labelled = train + novel
    return {"proposed": len(names), "train": train, "novel": novel, "unlabelled": unlabelled,
            "train_share": round(train / labelled, 3) if labelled else None, "duplicates": len(duplicates),
            "duplicate_pairs": duplicates, "unlabelled_names": unl, "train_names": train_names}


def associate(train: list[str], num: int, lexical: bool) -> tuple[list[str], list[dict], float]:
    from dreammask.services.association.backends.embedding import EmbeddingAssociation
    from dreammask.shared.settings import Settings

    os.environ["DREAMMASK_CNA_LEXICAL_SCREEN"] = "true" if lexical else "false"
    backend = EmbeddingAssociation.from_settings(Settings())
    backend.associate(train, 1, seed=1)  # warm-up: the first call also embeds the training names
    t0 = time.perf_counter()
    novel, dropped = backend.associate(train, num, seed=0)
    return [n.name for n in novel], dropped, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description="CNA: share of proposals that are really training categories")
    ap.add_argument("--num", type=int, default=100)
    ap.add_argument("--labels", type=Path, default=ROOT / "cna_labels.tsv")
    ap.add_argument("--dump", type=Path, default=None, help="write the proposals to this JSON file")
    a = ap.parse_args()
    from dreammask.shared.vocabulary import coco_panoptic

    labels = load_labels(a.labels)
    vocabs = {"coco133": list(coco_panoptic()[0]), "common20": VOCAB_20}
    result: dict = {"bench": "cna", "num_novel": a.num}
    dump = {}
    for vname, train in vocabs.items():
        for mode, lexical in (("before", False), ("after", True)):
            names, dropped, sec = associate(train, a.num, lexical)
            j = judge(names, vname, labels)
            dump[f"{vname}_{mode}"] = names
            print(f"{vname:8s} {mode:6s}: {j['proposed']} proposed, {j['train']} training categories "
                  f"({j['train_share']}), {j['duplicates']} duplicates, {j['unlabelled']} unlabelled, "
                  f"{sec:.2f} s; training: {', '.join(j['train_names'][:30])}")
            if j["duplicate_pairs"]:
                print(f"    duplicates: {'; '.join(j['duplicate_pairs'])}")
            if j["unlabelled_names"]:
                print(f"    unlabelled: {', '.join(j['unlabelled_names'])}")
            for k in ("proposed", "train_share", "duplicates", "unlabelled"):
                result[f"{vname}_{mode}_{k}"] = j[k]
            result[f"{vname}_{mode}_seconds"] = round(sec, 2)
        b, f = result[f"{vname}_before_train_share"], result[f"{vname}_after_train_share"]
        result[f"{vname}_train_share_ratio_after_before"] = round(f / b, 3) if b and f is not None else None
    if a.dump:
        a.dump.write_text(json.dumps(dump, indent=1))
    result.update({"goal_train_share": 0.05, "goal_duplicates": 0, "cpu_count": os.cpu_count()})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
