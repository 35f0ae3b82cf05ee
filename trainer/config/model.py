"""detectron2-style configuration of the trainer: `get_cfg()` returns every default.

The keys follow Mask2Former / FC-CLIP so their published yaml files read the same way. Presets live in
`trainer/configs/*.yaml` (`_BASE_` inheritance is supported by fvcore's CfgNode). Other parts of the trainer
(data, engine) add their own keys with their own `add_*_config(cfg)` before the config is frozen.
"""

from __future__ import annotations

from pathlib import Path

from fvcore.common.config import CfgNode as _FvcoreCfgNode

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"

# CLIP's own normalisation (open_clip OPENAI_DATASET_MEAN/STD) on a 0..255 scale, as FC-CLIP uses it:
# the frozen backbone must see inputs normalised the way it was trained.
CLIP_PIXEL_MEAN = [122.7709383, 116.7460125, 104.09373615]
CLIP_PIXEL_STD = [68.5005327, 66.6321579, 70.32316305]


class CfgNode(_FvcoreCfgNode):
    """fvcore's CfgNode (yaml + `_BASE_`), with a merge that names the preset file on a bad key."""

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        path = Path(cfg_filename)
        if not path.is_file() and (CONFIGS_DIR / path.name).is_file():
            path = CONFIGS_DIR / path.name  # preset names resolve against the shipped configs
        if not path.is_file():
            raise FileNotFoundError(
                f"config file {cfg_filename!r} not found; give a path or one of "
                f"{sorted(p.name for p in CONFIGS_DIR.glob('*.yaml'))}"
            )
        try:
            super().merge_from_file(str(path), allow_unsafe=allow_unsafe)
        except KeyError as exc:
            raise KeyError(
                f"{path}: {exc}; add the key with an add_*_config(cfg) first or fix its name"
            ) from exc


def _base_config() -> CfgNode:
    cfg = CfgNode()
    cfg.VERSION = 2
    cfg.SEED = -1
    cfg.OUTPUT_DIR = "./output"

    cfg.MODEL = CfgNode()
    cfg.MODEL.META_ARCHITECTURE = "FCCLIP"
    cfg.MODEL.DEVICE = "cuda"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.PIXEL_MEAN = list(CLIP_PIXEL_MEAN)
    cfg.MODEL.PIXEL_STD = list(CLIP_PIXEL_STD)
    cfg.MODEL.BACKBONE = CfgNode()
    cfg.MODEL.BACKBONE.NAME = "CLIPConvNeXt"

    cfg.INPUT = CfgNode()
    cfg.INPUT.FORMAT = "RGB"
    # Large-scale jitter as FC-CLIP trains COCO panoptic: random scale then a fixed square crop.
    cfg.INPUT.IMAGE_SIZE = 1024
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0
    # FC-CLIP's evaluation resizes the short side to 800 (max 1333): detectron2's defaults, kept by its
    # eval configs and shown in its test logs ("ResizeShortestEdge(short_edge_length=(800, 800), max_size=1333").
    cfg.INPUT.MIN_SIZE_TEST = 800
    cfg.INPUT.MAX_SIZE_TEST = 1333
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    cfg.INPUT.DATASET_MAPPER_NAME = "coco_panoptic_lsj"

    cfg.DATASETS = CfgNode()
    cfg.DATASETS.TRAIN = ()
    cfg.DATASETS.TEST = ()

    cfg.DATALOADER = CfgNode()
    cfg.DATALOADER.NUM_WORKERS = 4

    cfg.SOLVER = CfgNode()
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BASE_LR = 1e-4
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.MAX_ITER = 368750
    cfg.SOLVER.IMS_PER_BATCH = 16
    # Mask2Former's COCO panoptic recipe that FC-CLIP trains with: detectron2's multi-step schedule,
    # x0.1 at 327778 and 355092, 10 warmup iterations at factor 1.0. "WarmupPolyLR" is the alternative.
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
    cfg.SOLVER.STEPS = (327778, 355092)
    cfg.SOLVER.GAMMA = 0.1
    cfg.SOLVER.POLY_LR_POWER = 0.9
    cfg.SOLVER.WARMUP_ITERS = 10
    cfg.SOLVER.WARMUP_FACTOR = 1.0
    cfg.SOLVER.CHECKPOINT_PERIOD = 5000
    cfg.SOLVER.CLIP_GRADIENTS = CfgNode()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
    cfg.SOLVER.AMP = CfgNode()
    cfg.SOLVER.AMP.ENABLED = True

    cfg.TEST = CfgNode()
    cfg.TEST.EVAL_PERIOD = 0
    return cfg


def add_fcclip_config(cfg: CfgNode) -> None:
    """FC-CLIP + Mask2Former keys (names as in their repositories)."""
    cfg.MODEL.FC_CLIP = CfgNode()
    # open_clip model config name; its weights come from a local file, never from a hub.
    cfg.MODEL.FC_CLIP.CLIP_MODEL_NAME = "convnext_large_d_320"
    # Path of the open_clip checkpoint (laion2b_s29b_b131k_ft_soup for production). A relative path is
    # resolved against the models directory (DREAMMASK_MODELS_DIR).
    cfg.MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS = (
        "open_clip/convnext_large_d_320.laion2b_s29b_b131k_ft_soup/open_clip_pytorch_model.bin"
    )
    # Extra open_clip model-config json files or folders to register (custom architectures, tests).
    cfg.MODEL.FC_CLIP.CLIP_MODEL_CONFIG_PATHS = []
    cfg.MODEL.FC_CLIP.GEOMETRIC_ENSEMBLE_ALPHA = 0.4  # out-of-vocab weight for classes seen in training
    cfg.MODEL.FC_CLIP.GEOMETRIC_ENSEMBLE_BETA = 0.8  # out-of-vocab weight for classes not seen
    cfg.MODEL.FC_CLIP.ENSEMBLE_ON_VALID_MASK = False
    cfg.MODEL.FC_CLIP.PROMPT_TEMPLATES = "vild"  # name of a template set in modeling/text_classifier.py
    cfg.MODEL.FC_CLIP.TEXT_CACHE_DIR = ""  # on-disk cache of vocabulary text embeddings ("" = memory only)

    cfg.MODEL.SEM_SEG_HEAD = CfgNode()
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "MSDeformAttnPixelDecoder"
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 4
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 6
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 256
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
    cfg.MODEL.SEM_SEG_HEAD.NORM = "GN"
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_NHEADS = 8
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_N_POINTS = 4
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_DIM_FEEDFORWARD = 1024
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_DROPOUT = 0.0

    cfg.MODEL.MASK_FORMER = CfgNode()
    cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
    cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION = True
    cfg.MODEL.MASK_FORMER.NO_OBJECT_WEIGHT = 0.1
    cfg.MODEL.MASK_FORMER.CLASS_WEIGHT = 2.0
    cfg.MODEL.MASK_FORMER.MASK_WEIGHT = 5.0
    cfg.MODEL.MASK_FORMER.DICE_WEIGHT = 5.0
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = 256
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 250
    cfg.MODEL.MASK_FORMER.NHEADS = 8
    cfg.MODEL.MASK_FORMER.DROPOUT = 0.0
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 2048
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 10  # 9 masked-attention layers + the prediction from the raw queries
    cfg.MODEL.MASK_FORMER.PRE_NORM = False
    cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ = False
    cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY = 32
    cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 112 * 112
    cfg.MODEL.MASK_FORMER.OVERSAMPLE_RATIO = 3.0
    cfg.MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO = 0.75
    cfg.MODEL.MASK_FORMER.TEST = CfgNode()
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = True
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = True
    # 0.0 as FC-CLIP's eval configs (fcclip_convnext_large_eval_*.yaml); 0.8 is its training-time value.
    cfg.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD = 0.0
    cfg.MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD = 0.8


def add_dreammask_config(cfg: CfgNode) -> None:
    """IAT keys: the real-feature memory bank and the semantic-representation-alignment loss."""
    cfg.MODEL.DREAMMASK = CfgNode()
    cfg.MODEL.DREAMMASK.ENABLED = True
    cfg.MODEL.DREAMMASK.MEMORY_BANK_SIZE = 64  # slots per class (ring buffer)
    cfg.MODEL.DREAMMASK.LAMBDA_SRA = 1.0  # weight of L_sra in L = L_seg + lambda * L_sra
    # What the bank holds: "query" (class embeddings of queries matched to real objects) or "clip" (frozen
    # CLIP embeddings of real objects pooled under their ground-truth masks); docs/training_model.md.
    cfg.MODEL.DREAMMASK.FEATURE_SOURCE = "query"


def get_cfg() -> CfgNode:
    """A fresh config holding every default of the model (FC-CLIP + DreamMask)."""
    cfg = _base_config()
    add_fcclip_config(cfg)
    add_dreammask_config(cfg)
    return cfg


def load_config(*files: str | Path, opts: list[str] | None = None) -> CfgNode:
    """get_cfg() merged with preset/yaml files (in order) and `KEY VALUE` overrides."""
    cfg = get_cfg()
    for f in files:
        cfg.merge_from_file(str(f))
    if opts:
        cfg.merge_from_list(list(opts))
    return cfg
