"""Two processes with the gloo backend (spawned, CPU): one DDP training, ranks agree, one checkpoint."""

import json

from dreammask.shared.storage import LocalObjectStore
from dreammask.trainer.config import get_training_cfg
from dreammask.trainer.data.toy import write_toy_dataset
from dreammask.trainer.engine.launch import train_local_processes


def test_two_process_gloo_training(tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    write_toy_dataset(store, "ds-real", num_images=4, size=48, seed=1, is_synthetic=False)
    write_toy_dataset(store, "ds-syn", num_images=4, size=48, seed=2)
    from dreammask.trainer.testing import tiny_cfg

    tiny_cfg(tmp_path / "weights")  # written once, read by both processes
    cfg = get_training_cfg(tiny=True, overrides={
        # the export flagged is_synthetic False is sorted into the real stream
        "DATASETS.SYNTHETIC.IDS": ["ds-real", "ds-syn"], "DATASETS.SYNTHETIC.CACHE_DIR": str(tmp_path / "cache"),
        "SOLVER.IMS_PER_BATCH": 4, "SOLVER.MAX_ITER": 3, "SOLVER.CHECKPOINT_PERIOD": 3,
        "ENGINE.DIST_BACKEND": "gloo", "ENGINE.LOG_PERIOD": 1,
    })
    cfg.MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS = str(tmp_path / "weights" / "dreammask-tiny-convnext.random.pt")
    train_local_processes(cfg, store, "trainings/ddp/", 2, result_dir=tmp_path)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert (r0["world_size"], r1["world_size"]) == (2, 2) and (r0["rank"], r1["rank"]) == (0, 1)
    assert r0["iteration"] == r1["iteration"] == 3
    # gradients were averaged: both replicas hold the same weights
    assert r0["params_checksum"] == r1["params_checksum"]
    # per process: 2 images, one real and one synthetic
    assert r0["real_images"] == 4 and r0["synthetic_images"] == 4 and r0["synthetic_per_batch"] == 1
    assert store.get_bytes("trainings/ddp/last_checkpoint").decode() == "model_0000003.pth"
    lines = store.get_bytes("trainings/ddp/metrics.jsonl").decode().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [0, 1, 2]
