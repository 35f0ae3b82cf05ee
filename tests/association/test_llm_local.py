"""The `transformers` backends with a tiny randomly initialised Llama and a tokenizer trained here, saved
to a models directory and loaded by the production loader. The model writes noise: the stage must
survive it and say why nothing usable came out."""

from __future__ import annotations

import json

import pytest
from llm_testdata import TRAIN

from dreammask.services.association.llm.parsing import LLMOutputError
from dreammask.services.association.llm.prompts import cna_messages, layout_messages, load_exemplars
from dreammask.shared.backends import Failure, LayoutRequest
from dreammask.shared.registry import backend_class
from dreammask.shared.schemas import NovelCategory, SceneLayout

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


# A reply that both the CNA and the layout parser accept (each reads its own keys).
SCRIPTED_REPLY = {
    "categories": [
        {"name": "Awnings", "related_to": "building", "reason": "awnings shade shop fronts", "visual": True},
        {"name": "leash", "related_to": "dog", "reason": "dogs are walked on a leash", "visual": True},
        {"name": "cars", "related_to": "car", "reason": "a member in disguise", "visual": True},
    ],
    "caption": "a shop front with a striped awning",
    "objects": [
        {"category": "awning", "box": [0.2, 0.3, 0.7, 0.5]},
        {"category": "building", "box": [0.0, 0.0, 1.0, 0.8]},
        {"category": "dog", "box": [0.6, 0.6, 0.8, 0.9]},
    ],
}


def build_scripted_llm(path):
    """A real Llama whose weights make it a deterministic chain "{" -> <the reply> -> </s>: its blocks add
    nothing to the residual stream, the embedding is one-hot and the head maps each token to its successor.
    Loaded by the production loader, it proves the local path yields real categories and layouts."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    reply = json.dumps(SCRIPTED_REPLY)[1:]  # the engine starts every reply with "{"
    tok = Tokenizer(models.WordLevel({"<pad>": 0, "<s>": 1, "</s>": 2, "[UNK]": 3, "{": 4}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="[UNK]")
    fast.add_tokens([reply])
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    vocab, hidden = len(fast), 8
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=8, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.embed_tokens.weight[:, :vocab] = torch.eye(vocab)
        model.model.norm.weight.fill_(1.0)
        for layer in model.model.layers:
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
        successor = {4: fast.convert_tokens_to_ids(reply)}
        for t in range(vocab):
            model.lm_head.weight[successor.get(t, 2), t] = 30.0
    model.save_pretrained(path)


def test_a_local_model_that_answers_well_gives_categories_and_layouts(tmp_path, monkeypatch, embedder):
    build_scripted_llm(tmp_path / "llm" / "scripted")
    monkeypatch.setenv("DREAMMASK_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("DREAMMASK_LOCAL_LLM_MODEL", "llm/scripted")
    monkeypatch.setenv("DREAMMASK_LOCAL_LLM_DEVICE", "cpu")
    monkeypatch.setenv("DREAMMASK_CNA_ROUNDS", "3")
    monkeypatch.setenv("DREAMMASK_CNA_MIN_SUPPORT", "2")
    from dreammask.shared.settings import Settings

    core = Settings()
    kept, dropped = backend_class("association", "transformers").from_settings(core).associate(TRAIN, 5, seed=0)
    assert [(c.name, c.nearest_train, c.support, c.source) for c in kept] == [
        ("awning", "building", 3, "transformers"), ("leash", "dog", 3, "transformers")]
    assert any(d["name"] == "car" and d["reason"] == "synonym of car (same name)" for d in dropped)

    planner = backend_class("layout", "transformers").from_settings(core)
    reqs = [LayoutRequest(job_id="j", scene_id=f"{i:05d}", scene_index=i, novel=kept[0], train=TRAIN,
                          novel_names=[c.name for c in kept], seed=5, max_objects=4, image_size=256) for i in range(2)]
    for lay in planner.plan(reqs):
        assert isinstance(lay, SceneLayout) and lay.backend == "transformers"
        assert [(o.category, o.is_novel) for o in lay.objects] == [("awning", True), ("building", False), ("dog", False)]
        assert lay.caption == SCRIPTED_REPLY["caption"]


def test_missing_local_model_says_what_to_set(tmp_path, monkeypatch):
    from dreammask.services.association.backends.local_llm import LocalModelMissing
    from dreammask.shared.settings import Settings

    monkeypatch.setenv("DREAMMASK_MODELS_DIR", str(tmp_path))
    with pytest.raises(LocalModelMissing, match="DREAMMASK_LOCAL_LLM_MODEL"):
        backend_class("association", "transformers").from_settings(Settings())
