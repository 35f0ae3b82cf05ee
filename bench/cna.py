"""Benchmark of category name association: how many proposals are really training categories, and how
many are things and stuff that fill real scenes.

For two training vocabularies (COCO panoptic's 133 classes, and a 20-class list of common things and
stuff), the embedded `embedding` backend proposes N novel categories three times in one run, side by side:
- `before`: the lexical screen off (DREAMMASK_CNA_LEXICAL_SCREEN=false: members, compound tails and the
  embedding-similarity thresholds only, ranked by nearest-category cosine; the behaviour before WordNet);
- `screen`: the shared lexical screen (WordNet) and the usefulness ranking, without the scene prior
  (DREAMMASK_CNA_SCENE_PRIOR_WEIGHT=0: the ranking before issue 25);
- `after`: the screen, the usefulness ranking and the scene-frequency prior at --weight (default: the
  setting's default).
Each proposal is judged by the labelled list bench/cna_labels.tsv, written by hand (one line per name
and vocabulary: `train` when annotators of that vocabulary would label the object as one of its classes,
i.e. a synonym, spelling variant, sub-type, generalisation or clear part of one; `novel` otherwise),
checked against COCO's class definitions and LVIS's WordNet synsets. A proposal missing from the list is
counted as unlabelled, never as novel. Also counted: duplicates among the proposals (two names that
label the same thing, by the list's `same_as` column), and seconds to associate.

Scene categories: `scene_share` is the share of proposals that are frequent or common scene categories,
i.e. an LVIS v1 category of frequency bin f (over 100 training images) or c (11-100), or a COCO-Stuff
stuff class (matched by spelling or WordNet sense, services/association/scene_prior.py); `frequent_share`
counts bin f and stuff only, `rare_share` LVIS bin r, `unknown_share` names in neither source. The same
judge serves all three modes. It reads the same metadata the `after` ranking uses, so it shows that the
prior does what it says, not that the proposals train a better model.

    python bench/cna.py [--num 100] [--weight 0.3]
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


def scene_judge():
    """The scene-frequency look-up every mode is judged by (WordNet loaded, whatever the mode's screen)."""
    from dreammask.services.association.scene_prior import ScenePrior
    from dreammask.services.association.wordnet import get_wordnet

    return ScenePrior(get_wordnet())


def scenes(names: list[str], lookup) -> dict:
    freq = [lookup.lookup(n) for n in names]
    n = len(names)

    def share(flags) -> float | None:
        return round(sum(flags) / n, 3) if n else None

    return {
        "scene_share": share(f.scene for f in freq),
        "frequent_share": share(f.frequency == "f" or f.stuff_name is not None for f in freq),
        "rare_share": share(f.frequency == "r" and f.stuff_name is None for f in freq),
        "unknown_share": share(not f.known for f in freq),
        "not_scene_names": [nm for nm, f in zip(names, freq) if not f.scene],
    }


MODES = {"before": (False, 0.0), "screen": (True, 0.0), "after": (True, None)}  # (lexical screen, weight)


def associate(train: list[str], num: int, lexical: bool, weight: float | None = None
              ) -> tuple[list[str], list[dict], float]:
    from dreammask.services.association.backends.embedding import EmbeddingAssociation
    from dreammask.shared.settings import Settings

    os.environ["DREAMMASK_CNA_LEXICAL_SCREEN"] = "true" if lexical else "false"
    if weight is None:
        os.environ.pop("DREAMMASK_CNA_SCENE_PRIOR_WEIGHT", None)
    else:
        os.environ["DREAMMASK_CNA_SCENE_PRIOR_WEIGHT"] = str(weight)
    backend = EmbeddingAssociation.from_settings(Settings())
    backend.associate(train, 1, seed=1)  # warm-up: the first call also embeds the training names
    t0 = time.perf_counter()
    novel, dropped = backend.associate(train, num, seed=0)
    return [n.name for n in novel], dropped, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description="CNA: share of proposals that are training categories, and that "
                                             "are frequent or common scene categories")
    ap.add_argument("--num", type=int, default=100)
    ap.add_argument("--weight", type=float, default=None,
                    help="scene-prior weight of the `after` mode (default: DREAMMASK_CNA_SCENE_PRIOR_WEIGHT's default)")
    ap.add_argument("--vocab", choices=("coco133", "common20"), action="append",
                    help="run only these training vocabularies (default: both)")
    ap.add_argument("--labels", type=Path, default=ROOT / "cna_labels.tsv")
    ap.add_argument("--dump", type=Path, default=None, help="write the proposals to this JSON file")
    a = ap.parse_args()
    from dreammask.shared.settings import Settings
    from dreammask.shared.vocabulary import candidate_vocabulary, coco_panoptic

    labels = load_labels(a.labels)
    lookup = scene_judge()
    vocabs = {"coco133": list(coco_panoptic()[0]), "common20": VOCAB_20}
    if a.vocab:
        vocabs = {k: v for k, v in vocabs.items() if k in a.vocab}
    os.environ.pop("DREAMMASK_CNA_SCENE_PRIOR_WEIGHT", None)
    weight = a.weight if a.weight is not None else Settings().cna_scene_prior_weight
    result: dict = {"bench": "cna", "num_novel": a.num, "candidates": len(candidate_vocabulary()),
                    "scene_prior_weight": weight}
    dump = {}
    for vname, train in vocabs.items():
        for mode, (lexical, mode_weight) in MODES.items():
            names, dropped, sec = associate(train, a.num, lexical, weight if mode_weight is None else mode_weight)
            j = judge(names, vname, labels)
            sc = scenes(names, lookup)
            dump[f"{vname}_{mode}"] = names
            print(f"{vname:8s} {mode:6s}: {j['proposed']} proposed, {j['train']} training categories "
                  f"({j['train_share']}), {j['duplicates']} duplicates, {j['unlabelled']} unlabelled, "
                  f"scene {sc['scene_share']} (frequent {sc['frequent_share']}, rare {sc['rare_share']}, "
                  f"unknown {sc['unknown_share']}), {sec:.2f} s; training: {', '.join(j['train_names'][:30])}")
            print(f"    proposals: {', '.join(names)}")
            print(f"    not scene categories: {', '.join(sc['not_scene_names'])}")
            if j["duplicate_pairs"]:
                print(f"    duplicates: {'; '.join(j['duplicate_pairs'])}")
            if j["unlabelled_names"]:
                print(f"    unlabelled: {', '.join(j['unlabelled_names'])}")
            for k in ("proposed", "train_share", "duplicates", "unlabelled"):
                result[f"{vname}_{mode}_{k}"] = j[k]
            for k in ("scene_share", "frequent_share", "rare_share", "unknown_share"):
                result[f"{vname}_{mode}_{k}"] = sc[k]
            result[f"{vname}_{mode}_seconds"] = round(sec, 2)
        b, f = result[f"{vname}_before_train_share"], result[f"{vname}_after_train_share"]
        result[f"{vname}_train_share_ratio_after_before"] = round(f / b, 3) if b and f is not None else None
    if a.dump:
        a.dump.write_text(json.dumps(dump, indent=1))
    result.update({"goal_train_share": 0.05, "goal_duplicates": 0, "cpu_count": os.cpu_count(),
                   "load_average_1m": round(os.getloadavg()[0], 2)})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
