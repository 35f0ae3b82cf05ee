"""No evaluation benchmark's label list feeds category association.

The trainer scores models on ADE20K-150/847, Pascal Context 59/459 and Cityscapes (its vocabularies under
trainer/data/vocabularies/). Proposing exactly those classes as novel categories would leak the test, so
no candidate or scene-frequency source may be one of them, and nothing in the association service (nor
shared/vocabulary.py, which it reads its lists through) may read the trainer's lists.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import dreammask.services.association as association_pkg
import dreammask.shared as shared_pkg
from dreammask.shared.schemas import normalise_name
from dreammask.shared.vocabulary import LVIS_IMAGE_COUNTS, STUFF_FILE, VOCAB_FILES, candidate_vocabulary
from dreammask.trainer.data.vocabulary import available_vocabularies, load_vocabulary_file

VOCAB_DIR = Path(shared_pkg.__file__).parent / "data" / "vocab"
TRAINING_VOCABULARIES = {"coco_panoptic"}  # what models are trained on, not scored on
EVALUATION = sorted(set(available_vocabularies()) - TRAINING_VOCABULARIES)

# A legitimate source shares generic names with an evaluation list (wall, sky, car...): at most 53 % of
# Cityscapes' 19 classes and 46 % of any larger list's. A copy, or a list derived from one, covers far
# more: the ADE20K-847 names the candidates used to include covered 99 % of ADE20K-847, 93 % of
# ADE20K-150 and 73 % of Pascal Context 59.
MAX_COVERAGE = 0.6
MAX_OWN_SHARE = 0.9  # ... or consists mostly of one list's names


def evaluation_names(vocab: str) -> tuple[set[str], set[str]]:
    """(each class's first name, every synonym) of one of the trainer's vocabularies, normalised."""
    v = load_vocabulary_file(vocab)
    return ({normalise_name(s[0]) for s in v.synonyms},
            {normalise_name(x) for s in v.synonyms for x in s})


def source_names(file: str) -> set[str]:
    lines = (VOCAB_DIR / file).read_text(encoding="utf-8").splitlines()
    if file.endswith(".tsv"):
        lines = [line.split("\t")[0] for line in lines if not line.startswith("#")][1:]
    return {normalise_name(x) for x in lines if x.strip()}


def leak(names: set[str], vocab: str) -> str | None:
    """Why a list of names counts as the evaluation list `vocab`, or None."""
    first, synonyms = evaluation_names(vocab)
    coverage = len(names & first) / len(first)
    own = len(names & synonyms) / len(names)
    if coverage >= MAX_COVERAGE:
        return f"covers {coverage:.0%} of {vocab}'s classes"
    if own >= MAX_OWN_SHARE:
        return f"{own:.0%} of its names are {vocab}'s"
    return None


def test_the_trainer_has_the_evaluation_lists():
    assert {"ade20k_150", "ade20k_847", "pascal_context_59", "pascal_context_459", "cityscapes"} <= set(EVALUATION)


@pytest.mark.parametrize("vocab", EVALUATION)
def test_the_check_recognises_an_evaluation_list(vocab):
    """The check can fail: each evaluation list itself, and two thirds of it mixed into LVIS's names, are caught."""
    first, _ = evaluation_names(vocab)
    assert leak(first, vocab) is not None
    if len(first) >= 59:
        assert leak(set(sorted(first)[: len(first) // 3 * 2]) | source_names("lvis.txt"), vocab) is not None


@pytest.mark.parametrize("file", [*VOCAB_FILES, LVIS_IMAGE_COUNTS, STUFF_FILE])
@pytest.mark.parametrize("vocab", EVALUATION)
def test_no_candidate_or_frequency_source_is_an_evaluation_list(file, vocab):
    assert leak(source_names(file), vocab) is None, f"{file}: {leak(source_names(file), vocab)}"


def test_no_evaluation_list_ships_with_the_vocabularies():
    for vocab in EVALUATION:
        assert not list(VOCAB_DIR.glob(f"{vocab}*")), f"{vocab} must not ship in shared/data/vocab"
    assert all((VOCAB_DIR / f).is_file() for f in (*VOCAB_FILES, LVIS_IMAGE_COUNTS, STUFF_FILE))


def test_the_candidates_are_exactly_the_listed_sources():
    """Every candidate name comes from a file the check above covers, none from elsewhere."""
    listed = set().union(*(source_names(f) for f in VOCAB_FILES))
    assert {normalise_name(c) for c in candidate_vocabulary()} == listed


def _tracked_files(root: Path) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "."], cwd=root, capture_output=True,
                         text=True, check=True).stdout.split()
    return [root / p for p in out]


def test_nothing_in_association_reads_the_evaluation_lists():
    root = Path(association_pkg.__file__).parent
    files = [p for p in _tracked_files(root) if p.suffix in (".py", ".tsv", ".txt", ".json", ".yaml", ".md")]
    files.append(Path(shared_pkg.__file__).parent / "vocabulary.py")
    assert len(files) > 10
    names = "|".join(re.escape(v) for v in EVALUATION)
    pattern = re.compile(rf"dreammask\.trainer|\btrainer\b|vocabularies|{names}|ade20k|pascal|cityscapes", re.I)
    offenders = []
    for p in files:
        text = p.read_text(encoding="utf-8", errors="replace")
        if p.name == "vocabulary.py" and p.parent.name == "shared":
            text = text.split('"""', 2)[2]  # its docstring names the lists it must never read
        if p.name == "scene_prior.py":
            text = text.split('"""', 2)[2]  # likewise
        offenders += [f"{p.name}: {m.group(0)}" for m in pattern.finditer(text)]
    assert not offenders, offenders
