"""The `transformers` backends with a tiny randomly initialised Llama and a tokenizer trained here, saved
to a models directory and loaded by the production loader. The model writes noise: the stage must
survive it and say why nothing usable came out."""

from __future__ import annotations

import json

import pytest
from conftest import TRAIN

from dreammask.services.association.llm.parsing import LLMOutputError
from dreammask.services.association.llm.prompts import cna_messages, layout_messages, load_exemplars
from dreammask.shared.backends import Failure, LayoutRequest
from dreammask.shared.registry import backend_class
from dreammask.shared.schemas import NovelCategory

MODEL_SUBPATH = "llm/tiny-llama"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tiny_llm(models_dir):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [m["content"] for m in cna_messages(TRAIN, 10, {}, schema_in_prompt=True)]
    corpus += [m["content"] for m in layout_messages("awning", TRAIN, 5, list(load_exemplars()), {}, schema_in_prompt=True)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    path = models_dir / MODEL_SUBPATH
    fast.save_pretrained(path)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=8192,
                      bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    import torch

    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_llm_dir(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    build_tiny_llm(models)
    return models


@pytest.fixture
def local_env(tiny_llm_dir, monkeypatch):
    monkeypatch.setenv("DREAMMASK_MODELS_DIR", str(tiny_llm_dir))
    monkeypatch.setenv("DREAMMASK_LOCAL_LLM_MODEL", MODEL_SUBPATH)  # relative: resolved under the models dir
    monkeypatch.setenv("DREAMMASK_LOCAL_LLM_DEVICE", "cpu")
    monkeypatch.setenv("DREAMMASK_LOCAL_LLM_MAX_NEW_TOKENS", "24")
    monkeypatch.setenv("DREAMMASK_LOCAL_LLM_BATCH_SIZE", "4")
    monkeypatch.setenv("DREAMMASK_CNA_ROUNDS", "2")
    monkeypatch.setenv("DREAMMASK_CNA_MIN_SUPPORT", "1")
    monkeypatch.setenv("DREAMMASK_LLM_PARSE_ATTEMPTS", "2")
    monkeypatch.setenv("DREAMMASK_LAYOUT_EXEMPLARS", "1")
    from dreammask.shared.settings import Settings

    return Settings()


def test_noise_from_a_local_model_fails_cna_with_a_reason(local_env, embedder):
    cls = backend_class("association", "transformers")
    backend = cls.from_settings(local_env)
    backend.warmup()
    info = backend.describe()
    assert info["engine"] == "transformers" and info["architecture"] == "LlamaForCausalLM"
    assert info["model_path"].endswith(MODEL_SUBPATH) and info["device"] == "cpu"
    with pytest.raises(LLMOutputError, match=r"only 0 of 2 LLM rounds gave a usable reply.*2 of 2 replies were unusable"):
        backend.associate(TRAIN, 3, seed=0)


def test_noise_from_a_local_model_fails_each_layout_with_a_reason(local_env):
    backend = backend_class("layout", "transformers").from_settings(local_env)
    novel = NovelCategory(name="awning", nearest_train="building", score=0.4, source="transformers")
    reqs = [LayoutRequest(job_id="j", scene_id=f"{i:05d}", scene_index=i, novel=novel, train=TRAIN,
                          novel_names=["awning"], seed=i, max_objects=4, image_size=256) for i in range(3)]
    out = backend.plan(reqs)
    assert len(out) == 3
    for f in out:
        assert isinstance(f, Failure)
        assert f.reason.startswith("LLM layout failed: 2 of 2 replies were unusable; last: ")
        assert any(w in f.reason for w in ("not JSON", "no \"objects\"", "novel category", "usable objects"))


def test_the_prompt_reaches_the_model_through_its_chat_template(local_env):
    from dreammask.services.association.backends.local_llm import load_local_llm, render_prompt

    tok, model, _ = load_local_llm(local_env.models_dir / MODEL_SUBPATH, "cpu")
    text = render_prompt(tok, cna_messages(TRAIN, 5, {}, schema_in_prompt=True))
    assert text.startswith("<|system|>") and text.endswith("<|assistant|>\n")
    assert json.dumps(TRAIN) in text  # the names travel JSON-quoted
    assert tok.padding_side == "left" and tok.pad_token == "<pad>"


def test_missing_local_model_says_what_to_set(tmp_path, monkeypatch):
    from dreammask.services.association.backends.local_llm import LocalModelMissing
    from dreammask.shared.settings import Settings

    monkeypatch.setenv("DREAMMASK_MODELS_DIR", str(tmp_path))
    with pytest.raises(LocalModelMissing, match="DREAMMASK_LOCAL_LLM_MODEL"):
        backend_class("association", "transformers").from_settings(Settings())
