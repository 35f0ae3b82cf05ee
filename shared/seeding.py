"""Seeds, with one meaning each, so any scene re-renders identically, alone or in any batch:

* the **job seed** (`JobSpec.seed`): chosen by the client;
* a **scene seed** (`JobPlan.scenes[i].seed`): `scene_seed(job seed, scene index)`, recorded once in the job's
  plan by the association stage; nothing downstream re-derives it from the spec;
* a **stage seed**: `stage_seed(scene seed, salt)` with the salt its `StageDef` declares (`seed_salt`), so the
  layout sampler and the renderer draw independent streams. What a stage drew with is recorded in its output:
  `SceneLayout.seed` (the layout seed), `RenderRecord.seed` (the render seed, the one number a re-render
  needs besides the layout and the parameters).
"""

from __future__ import annotations

import zlib

import numpy as np

from .chain import DEFAULT_CHAIN

# The salt of each stage that draws random numbers, as declared (`StageDef.seed_salt`).
SALTS = {st.name: st.seed_salt for st in DEFAULT_CHAIN if st.seed_salt is not None}


def derive_seed(*parts: int) -> int:
    """A 31-bit seed from integers, well mixed (NumPy's SeedSequence): nearby inputs give unrelated seeds."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


def scene_seed(job_seed: int, scene_index: int) -> int:
    return derive_seed(job_seed, scene_index)


def stage_seed(scene_seed: int, salt: int) -> int:
    return derive_seed(scene_seed, salt)


def name_salt(name: str) -> int:
    """A salt for a use that is not a stage (e.g. a choice shared by every scene of a category)."""
    return zlib.crc32(name.encode())
