"""Every default of the trainer's configuration, in detectron2's style: one `add_<x>_config(cfg)` per section,
each key assigned once, here and nowhere else (a test parses this module and checks it).

`get_cfg()` applies them all to a fresh node; `dreammask.trainer.config.d2` applies the same functions to
a detectron2 config, so both paths read the same keys with the same defaults. The keys follow
Mask2Former / FC-CLIP, so their published yaml files read the same way; presets live in
`trainer/configs/*.yaml` (`_BASE_` inheritance). docs/training.md and docs/training_model.md list every
key with its meaning. No torch here: the API imports this package.
"""

from __future__ import annotations

from pathlib import Path

from fvcore.common.config import CfgNode as _FvcoreCfgNode

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"

# CLIP's own normalisation (open_clip OPENAI_DATASET_MEAN/STD) on a 0..255 scale, RGB, as FC-CLIP's configs
# set it: the frozen backbone must see inputs normalised the way it was trained.
CLIP_PIXEL_MEAN = [122.7709383, 116.7460125, 104.09373615]
CLIP_PIXEL_STD = [68.5005327, 66.6321579, 70.32316305]

# MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS "random:<seed>": randomly initialised CLIP weights of the named
# open_clip config, written once per machine and loaded through the same loader as a real checkpoint (the
# tiny test model, benchmarks of full-size architectures). Never a production setting.
RANDOM_WEIGHTS_PREFIX = "random:"


class ConfigError(ValueError):
    """One or more problems, each with the input it came from (a tuple such as ("overrides", "SOLVER.X"))."""

    def __init__(self, errors: list[tuple[tuple, str]]):
        self.errors = list(errors)
        super().__init__("; ".join(msg for _, msg in self.errors))


def shipped_configs() -> list[str]:
    return sorted(str(p.relative_to(CONFIGS_DIR)) for p in CONFIGS_DIR.rglob("*.yaml"))


def resolve_config_file(name: str) -> str:
    """A YAML path, or the name of a preset under trainer/configs/ (with or without .yaml)."""
    p = Path(name)
    if p.is_file():
        return str(p)
    for cand in (CONFIGS_DIR / name, CONFIGS_DIR / f"{name}.yaml"):
        if cand.is_file():
            return str(cand)
    raise ConfigError([(("config",), f"config file {name!r} not found; give a path or a shipped config: "
                                      f"{', '.join(shipped_configs())}")])


class CfgNode(_FvcoreCfgNode):
    """fvcore's CfgNode (yaml + `_BASE_`): a bare preset name resolves against trainer/configs/, and a bad
    key names the file it came from."""

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        path = resolve_config_file(str(cfg_filename))
        try:
            super().merge_from_file(path, allow_unsafe=allow_unsafe)
        except KeyError as exc:
            raise KeyError(f"{path}: {exc}; fix the key's name (docs/training.md lists them)") from exc


def _section(parent, name: str):
    """parent[name], created as a node of the parent's own class where missing (yacs merges YAML only into
    nodes of one class, and a detectron2 config brings its own)."""
    if name not in parent:
        parent[name] = type(parent)()
    return parent[name]


def add_base_config(cfg) -> None:
    cfg.VERSION = 2
    cfg.SEED = -1  # seed of model init and RNGs; < 0 draws one per run (logged), as detectron2 does
    cfg.OUTPUT_DIR = "./output"


def add_model_config(cfg) -> None:
    _section(cfg, "MODEL")
    cfg.MODEL.META_ARCHITECTURE = "FCCLIP"
    cfg.MODEL.DEVICE = "cuda"
    # A checkpoint to start from or to evaluate: FC-CLIP's released detectron2 file (.pkl/.pth), or one of
    # this trainer's checkpoints; its names are mapped onto this model (engine/fcclip_weights.py).
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.PIXEL_MEAN = list(CLIP_PIXEL_MEAN)
    cfg.MODEL.PIXEL_STD = list(CLIP_PIXEL_STD)
    _section(cfg.MODEL, "BACKBONE")
    cfg.MODEL.BACKBONE.NAME = "CLIPConvNeXt"


def add_fcclip_config(cfg) -> None:
    """FC-CLIP + Mask2Former keys (names as in their repositories)."""
    _section(cfg, "MODEL")
    _section(cfg.MODEL, "FC_CLIP")
    # open_clip model config name; its weights come from a local file, never from a hub.
    cfg.MODEL.FC_CLIP.CLIP_MODEL_NAME = "convnext_large_d_320"
    # The open_clip checkpoint (laion2b_s29b_b131k_ft_soup for production); a relative path is resolved
    # against the models directory (DREAMMASK_MODELS_DIR); "random:<seed>" see RANDOM_WEIGHTS_PREFIX.
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

    _section(cfg.MODEL, "SEM_SEG_HEAD")
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

    _section(cfg.MODEL, "MASK_FORMER")
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
    _section(cfg.MODEL.MASK_FORMER, "TEST")
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = True
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = True
    # 0.0 as FC-CLIP's eval configs (fcclip_convnext_large_eval_*.yaml); 0.8 is its training-time value.
    cfg.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD = 0.0
    cfg.MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD = 0.8


def add_dreammask_config(cfg) -> None:
    """IAT keys (MODEL.DREAMMASK.*): the real-feature memory bank and the semantic-representation-alignment
    loss. New IAT keys go here, beside these."""
    _section(cfg, "MODEL")
    _section(cfg.MODEL, "DREAMMASK")
    cfg.MODEL.DREAMMASK.ENABLED = True
    cfg.MODEL.DREAMMASK.MEMORY_BANK_SIZE = 64  # slots per class (ring buffer)
    cfg.MODEL.DREAMMASK.LAMBDA_SRA = 1.0  # weight of L_sra in L = L_seg + lambda * L_sra
    # What the bank holds: "query" (class embeddings of queries matched to real objects) or "clip" (frozen
    # CLIP embeddings of real objects pooled under their ground-truth masks); docs/training_model.md.
    cfg.MODEL.DREAMMASK.FEATURE_SOURCE = "query"


def add_input_config(cfg) -> None:
    _section(cfg, "INPUT")
    cfg.INPUT.FORMAT = "RGB"
    # "coco_panoptic_lsj" (large-scale jitter, FC-CLIP's COCO recipe) or "fixed" (images as they are).
    cfg.INPUT.DATASET_MAPPER_NAME = "coco_panoptic_lsj"
    cfg.INPUT.IMAGE_SIZE = 1024
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0
    cfg.INPUT.RANDOM_FLIP = "horizontal"  # or "none"
    # Evaluation resize (shorter side, longer-side cap) for datasets whose registration names no size of
    # its own (TEST.DATASET_SIZES): detectron2's defaults, which FC-CLIP's ADE20K/Pascal/COCO eval configs
    # keep ("ResizeShortestEdge(short_edge_length=(800, 800), max_size=1333)" in its test logs).
    cfg.INPUT.MIN_SIZE_TEST = 800
    cfg.INPUT.MAX_SIZE_TEST = 1333


def add_datasets_config(cfg) -> None:
    _section(cfg, "DATASETS")
    # Real datasets by catalog name (trainer/data/builtin.py). The first one's class names decide which
    # evaluation classes count as seen (FC-CLIP's rule); with none, the first curated dataset's.
    cfg.DATASETS.TRAIN = ()
    cfg.DATASETS.TEST = ()  # catalog names or "synthetic:<dataset id>"
    cfg.DATASETS.ROOT = ""  # datasets root; "" = $DREAMMASK_DATASETS or ./datasets
    _section(cfg.DATASETS, "SYNTHETIC")
    cfg.DATASETS.SYNTHETIC.IDS = ()  # curated datasets exported by the platform, read from object storage
    cfg.DATASETS.SYNTHETIC.RATIO = 0.5  # share of each batch taken from synthetic samples
    cfg.DATASETS.SYNTHETIC.CACHE_DIR = ""  # local copy of the exports ("" = a temporary folder per run)


def add_dataloader_config(cfg) -> None:
    _section(cfg, "DATALOADER")
    # 4: FC-CLIP's (Mask2Former's) COCO base config and detectron2's default.
    cfg.DATALOADER.NUM_WORKERS = 4
    # Every per-process batch keeps at least this many real samples, so the SRA memory bank fills.
    cfg.DATALOADER.MIN_REAL_PER_BATCH = 1
    cfg.DATALOADER.SEED = 0  # seed of the sample order


def add_solver_config(cfg) -> None:
    _section(cfg, "SOLVER")
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BASE_LR = 1e-4
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1  # LR factor of trainable parameters under a `backbone` module
    cfg.SOLVER.MAX_ITER = 368750
    cfg.SOLVER.IMS_PER_BATCH = 16  # global batch, split across processes
    # Mask2Former's COCO panoptic recipe that FC-CLIP trains with: detectron2's multi-step schedule,
    # x0.1 at 327778 and 355092, 10 warmup iterations at factor 1.0. "WarmupPolyLR" is the alternative.
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
    cfg.SOLVER.STEPS = (327778, 355092)
    cfg.SOLVER.GAMMA = 0.1
    cfg.SOLVER.POLY_LR_POWER = 0.9
    cfg.SOLVER.WARMUP_ITERS = 10
    cfg.SOLVER.WARMUP_FACTOR = 1.0
    cfg.SOLVER.WARMUP_METHOD = "linear"
    cfg.SOLVER.CHECKPOINT_PERIOD = 5000
    cfg.SOLVER.MAX_TO_KEEP = 3  # checkpoints kept (the oldest are deleted)
    _section(cfg.SOLVER, "CLIP_GRADIENTS")
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"  # "full_model" (or its alias "norm")
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
    _section(cfg.SOLVER, "AMP")
    cfg.SOLVER.AMP.ENABLED = True  # mixed precision in training on GPUs; evaluation always runs in fp32
    cfg.SOLVER.AMP_DTYPE = "float16"  # "float16" (with a grad scaler) or "bfloat16"


def add_test_config(cfg) -> None:
    _section(cfg, "TEST")
    cfg.TEST.EVAL_PERIOD = 0  # evaluate every N iterations and at the end (0: never)
    cfg.TEST.EVAL_MAX_IMAGES = 0  # cap on the images of a periodic evaluation (the final one reads all)
    # Each dataset's own evaluation size where its registration gives one (Cityscapes 1024/2560, as
    # FC-CLIP's per-dataset eval configs); off: INPUT.MIN_SIZE_TEST/MAX_SIZE_TEST for every dataset.
    cfg.TEST.DATASET_SIZES = True


def add_engine_config(cfg) -> None:
    """The platform loop's own keys: metrics, status, processes, checkpoints."""
    _section(cfg, "ENGINE")
    cfg.ENGINE.LOG_PERIOD = 20  # iterations between metrics lines
    cfg.ENGINE.STATUS_PERIOD = 10  # iterations between status writes and cancel checks
    cfg.ENGINE.DIST_BACKEND = ""  # "" = nccl on GPUs, gloo on CPU
    # DDP: off, since every trainable parameter gets a gradient in every step (the SRA loss reads the class
    # embeddings the classification loss already uses; tests/trainer/test_modeling_forward.py checks it).
    cfg.ENGINE.FIND_UNUSED_PARAMETERS = False
    # Write frozen weights (the CLIP backbone) into checkpoints too; off saves ~800 MB per checkpoint for
    # ConvNeXt-L, the backbone then comes from MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS on resume.
    cfg.ENGINE.CHECKPOINT_FROZEN = True


# In order; `dreammask.trainer.config.d2` applies the same list to a detectron2 config.
ADD_CONFIG_FUNCTIONS = (
    add_base_config, add_model_config, add_fcclip_config, add_dreammask_config, add_input_config,
    add_datasets_config, add_dataloader_config, add_solver_config, add_test_config, add_engine_config,
)


def add_trainer_config(cfg):
    """Every section's keys, set to this trainer's defaults (in place); returns cfg."""
    for add in ADD_CONFIG_FUNCTIONS:
        add(cfg)
    return cfg


def get_cfg() -> CfgNode:
    """A fresh config holding every default of the trainer."""
    return add_trainer_config(CfgNode())
