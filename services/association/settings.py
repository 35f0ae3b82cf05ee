"""Settings of the association service's LLM backends (`llm` over HTTP, `transformers` in-process).

Same `DREAMMASK_` prefix as the core settings; the embedding thresholds used to screen near-synonyms
(`DREAMMASK_CNA_SYNONYM_THRESHOLD`, `DREAMMASK_CNA_DEDUP_THRESHOLD`) stay in the core `Settings` because
every CNA backend shares them. Light imports only: the deployment checks import this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from dreammask.shared.settings import Settings


class AssociationSettings(Settings):
    # ------------------------------------------------------------ the OpenAI-compatible server (vLLM)
    # Base URL up to and including `/v1`; the client posts to `{llm_base_url}/chat/completions`.
    llm_base_url: str = "http://llm:8000/v1"
    # The name the server serves the model under (vLLM: `--served-model-name`, else the model path).
    llm_model: str = "Qwen/Qwen2.5-7B-Instruct"
    # vLLM accepts any key unless started with `--api-key`; hosted endpoints need a real one.
    llm_api_key: SecretStr = SecretStr("EMPTY")
    llm_connect_timeout_s: float = Field(5.0, gt=0, le=300)
    # Deadline for one whole request (queueing in the server, generation, reading the reply).
    llm_timeout_s: float = Field(120.0, gt=0, le=3600)
    # Requests in flight at once from one worker process; vLLM batches them on the GPU.
    llm_max_concurrency: int = Field(16, ge=1, le=1024)
    # Retries of one request on 429, 5xx, timeouts and connection errors (exponential backoff, jitter).
    llm_max_retries: int = Field(4, ge=0, le=20)
    llm_backoff_base_s: float = Field(0.5, ge=0, le=60)
    llm_backoff_max_s: float = Field(20.0, ge=0, le=600)
    # "auto": ask for `response_format: json_schema` and fall back to prompt-only JSON when the server
    # rejects it; "json_schema": always (a rejection is an error); "prompt": never send response_format.
    llm_structured_output: Literal["auto", "json_schema", "prompt"] = "auto"
    # Replies larger than this are refused without parsing (hostile or runaway servers).
    llm_max_response_bytes: int = Field(1_000_000, ge=1_000, le=100_000_000)
    # Samples of one prompt whose reply fails parsing or validation before giving up on it.
    llm_parse_attempts: int = Field(3, ge=1, le=20)

    # ------------------------------------------------------------ category name association
    cna_rounds: int = Field(5, ge=1, le=50)  # independent sampled rounds (self-consistency)
    cna_min_support: int = Field(2, ge=1, le=50)  # k: keep names proposed in at least k rounds
    cna_temperature: float = Field(0.8, ge=0, le=2)
    cna_top_p: float = Field(0.95, gt=0, le=1)
    # Names asked for per round: this factor times the requested number, within the bounds below.
    cna_overask_factor: float = Field(2.0, ge=1, le=10)
    cna_min_candidates_per_round: int = Field(10, ge=1, le=200)
    cna_max_candidates_per_round: int = Field(60, ge=1, le=200)
    cna_max_tokens: int = Field(4096, ge=64, le=32768)
    cna_max_name_words: int = Field(4, ge=1, le=10)
    cna_reason_max_chars: int = Field(200, ge=20, le=2000)
    # Training lists longer than this are sent in a seeded sample (the prompt must fit the context).
    cna_max_prompt_categories: int = Field(400, ge=10, le=5000)

    # ------------------------------------------------------------ layout planning
    layout_temperature: float = Field(0.7, ge=0, le=2)
    layout_top_p: float = Field(0.95, gt=0, le=1)
    layout_max_tokens: int = Field(1024, ge=64, le=32768)
    layout_exemplars: int = Field(3, ge=0, le=20)  # in-context exemplar scenes per prompt
    layout_exemplars_file: Path | None = None  # default: the file shipped with the service
    layout_max_prompt_categories: int = Field(150, ge=5, le=2000)
    layout_min_box_side: float = Field(0.02, ge=0, le=0.5)  # normalised; smaller boxes are dropped
    layout_min_novel_area: float = Field(0.01, ge=0, le=0.5)  # the novel object must be visible
    layout_caption_max_chars: int = Field(300, ge=20, le=2000)

    # ------------------------------------------------------------ `transformers` backend (in-process)
    # A local instruct model directory (config.json, tokenizer, weights); relative to DREAMMASK_MODELS_DIR.
    local_llm_model: Path = Path("llm/Qwen2.5-1.5B-Instruct")
    local_llm_device: str = "auto"  # "auto": cuda when available, else cpu
    local_llm_dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    local_llm_batch_size: int = Field(8, ge=1, le=256)
    # Upper bound on generated tokens per reply for the local model (each task's own limit also applies).
    local_llm_max_new_tokens: int = Field(1024, ge=8, le=32768)

    @field_validator("llm_base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not v.startswith(("http://", "https://")):
            raise ValueError(
                f"DREAMMASK_LLM_BASE_URL {v!r} must start with http:// or https:// (e.g. http://llm:8000/v1)"
            )
        return v

    @model_validator(mode="after")
    def _check_association(self) -> AssociationSettings:
        if self.cna_min_support > self.cna_rounds:
            raise ValueError(
                f"DREAMMASK_CNA_MIN_SUPPORT ({self.cna_min_support}) must not exceed "
                f"DREAMMASK_CNA_ROUNDS ({self.cna_rounds}): no name could ever be kept"
            )
        if self.cna_min_candidates_per_round > self.cna_max_candidates_per_round:
            raise ValueError("DREAMMASK_CNA_MIN_CANDIDATES_PER_ROUND must not exceed DREAMMASK_CNA_MAX_CANDIDATES_PER_ROUND")
        return self

    def local_model_path(self, models_dir: Path) -> Path:
        p = Path(self.local_llm_model)
        return p if p.is_absolute() else Path(models_dir) / p
