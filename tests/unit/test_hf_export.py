"""Exports that load in transformers: the tokenizer (SentencePiece -> tokenizer.json), the Llama 2
chat template, causal and reward models, greedy parity, and loading an export back."""

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from models.generation import generate
from models.hf import smollm2_path
from models.llama import Llama, demo, tiny
from models.reward import RewardModel
from tasks.chat.format import prompt_tokens, tokenize_dialogue
from tasks.chat.hf_export import CHAT_TEMPLATE, export_tokenizer
from tasks.chat.tokenizer import SentencePieceTokenizer, load_tokenizer
from tasks.tokenizer.train import TokenizerConfig, train_tokenizer
from tasks.training.hf_export import export_hf_folder, is_hf_folder
from tasks.training.model_io import (
    HEAD_FILE,
    load_model,
    load_reward_model,
    save_model_folder,
)

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
ODD = ["  ", "   ", "\n", "\t", " \n ", "café", "naïve", "東京", "🍣", "12345", "3.14", "x²", "ﬁ",
       "Ωmega", "(a, b)", "--", "'quoted'", '"double"', "A.", "e.g."]  # fmt: skip


def _shipped_lines() -> list[str]:
    """Text that ships with the project: its README (English prose, code, numbers, markup)."""
    return [line for line in (ROOT / "README.md").read_text().split("\n") if line.strip()]


def _words() -> list[str]:
    # "<s>" / "</s>" written in text: transformers matches them as special tokens, the recipe's
    # encode never does (see tasks/chat/hf_export.py); keep them out of the random text
    return [w for line in _shipped_lines() for w in line.split(" ") if w and "<" not in w]


def _random_text(rng: random.Random, words: list[str], n_max: int = 12) -> str:
    parts = [
        rng.choice(words) + rng.choice([" ", " ", "", "  "]) for _ in range(rng.randint(1, n_max))
    ]
    for _ in range(rng.randint(0, 3)):
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(ODD))
    return "".join(parts)


@pytest.fixture(scope="module")
def spm_tokenizer(tmp_path_factory) -> SentencePieceTokenizer:
    """Trained with the recipe's own trainer options (TokenizerConfig defaults, small vocab)."""
    cfg = TokenizerConfig(vocab_size=1000, sample_bytes=1_000_000, num_threads=1)
    path, _ = train_tokenizer(_shipped_lines(), cfg, tmp_path_factory.mktemp("spm") / "tok.model")
    return SentencePieceTokenizer(path)


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    folder, gguf = smollm2_path()
    return load_tokenizer(folder / gguf)  # ~8 s: once per module


@pytest.fixture(scope="module")
def exports(spm_tokenizer, smollm2_tokenizer, tmp_path_factory):
    """kind -> (our tokenizer, its export folder, transformers' AutoTokenizer of the export)."""
    out = {}
    for kind, tok in (("sentencepiece", spm_tokenizer), ("smollm2", smollm2_tokenizer)):
        folder = tmp_path_factory.mktemp(f"export-{kind}")
        export_tokenizer(tok.path, folder)
        out[kind] = (tok, folder, AutoTokenizer.from_pretrained(str(folder)))
    return out


def test_exported_sentencepiece_tokenizer_encodes_like_sentencepiece(exports):
    tok, _, hf = exports["sentencepiece"]
    rng, words = random.Random(0), _words()
    texts = [_random_text(rng, words) for _ in range(2000)] + ODD + ["", " ", "a  b", " lead"]
    mismatched = [t for t in texts if hf(t, add_special_tokens=False)["input_ids"] != tok.encode(t)]
    assert not mismatched, mismatched[:5]
    for text in texts[:200]:  # decoding too: what SentencePiece decodes
        assert hf.decode(tok.encode(text)) == tok.decode(tok.encode(text))


@pytest.mark.parametrize(
    "rule, remove_extra", [("nmt_nfkc", True), ("identity", True), ("nfkc", False)]
)
def test_export_follows_other_normalisation_settings(rule, remove_extra, tmp_path):
    """The recipe trains with identity normalisation and keeps extra spaces (Llama 2's
    settings); a model trained otherwise (a character map, squeezed spaces) exports as well."""
    cfg = TokenizerConfig(
        vocab_size=600,
        sample_bytes=1_000_000,
        num_threads=1,
        normalization_rule_name=rule,
        remove_extra_whitespaces=remove_extra,
    )
    path, _ = train_tokenizer(_shipped_lines(), cfg, tmp_path / "tok.model")
    export_tokenizer(path, tmp_path / "hf")
    tok, hf = SentencePieceTokenizer(path), AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    rng, words = random.Random(3), _words()
    texts = (
        [_random_text(rng, words) for _ in range(500)] + ODD + ["x\u3000y", "ｆｕｌｌ", " \n a "]
    )
    mismatched = [t for t in texts if hf(t, add_special_tokens=False)["input_ids"] != tok.encode(t)]
    assert not mismatched, mismatched[:5]


def test_export_writes_special_tokens_and_template(exports):
    for kind, (tok, folder, hf) in exports.items():
        config = json.loads((folder / "tokenizer_config.json").read_text())
        assert config["chat_template"] == CHAT_TEMPLATE, kind
        assert not (folder / "chat_template.jinja").exists()
        assert (hf.bos_token_id, hf.eos_token_id) == (tok.bos_id(), tok.eos_id()), kind
        assert hf.pad_token_id is not None and hf.pad_token_id not in (
            hf.bos_token_id,
            hf.eos_token_id,
        )
        assert hf.unk_token is not None
    assert (exports["sentencepiece"][1] / "tokenizer.model").read_bytes() == Path(
        exports["sentencepiece"][0].path
    ).read_bytes()
    assert exports["sentencepiece"][2].pad_token == "<unk>"  # no pad piece: unk (never emitted)


def _dialogue(rng: random.Random, words: list[str], n_turns: int) -> tuple[str, list[dict]]:
    system = _random_text(rng, words, 8).strip() if rng.random() < 0.5 else ""
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": _random_text(rng, words) + " "}
        for i in range(n_turns)
    ]
    for turn in turns:  # blank content is refused by the format; keep some padding spaces
        if not turn["content"].strip():
            turn["content"] = "ok"
    return system, turns


def _messages(system: str, turns: list[dict]) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + turns


@pytest.mark.parametrize("kind", ["sentencepiece", "smollm2"])
def test_chat_template_renders_the_recipes_token_ids(exports, kind):
    """>= 200 seeded dialogues (1-4 turn pairs, with and without a system prompt) and 100
    generation prompts: transformers' apply_chat_template == tokenize_dialogue / prompt_tokens."""
    tok, _, hf = exports[kind]
    rng, words = random.Random(1), _words()
    checked = {"dialogue": 0, "prompt": 0, "with_system": 0}
    for i in range(300):
        prompt = i >= 200
        system, turns = _dialogue(rng, words, 2 * rng.randint(1, 4) - int(prompt))
        expected = (
            prompt_tokens(tok, system, turns)
            if prompt
            else tokenize_dialogue(tok, system, turns, "all_assistant")[0]
        )
        got = hf.apply_chat_template(
            _messages(system, turns), tokenize=True, add_generation_prompt=prompt, return_dict=False
        )
        assert got == expected, (kind, i, system, turns)
        checked["prompt" if prompt else "dialogue"] += 1
        checked["with_system"] += bool(system)
    assert checked["dialogue"] == 200 and checked["prompt"] == 100
    assert 100 < checked["with_system"] < 200


def test_recipe_reading_the_export_tokenizes_like_the_sentencepiece_model(exports):
    """A registered version's folder as the recipe's tokenizer (load_tokenizer picks
    tokenizer.json): the same dialogue ids as the SentencePiece model it was exported from."""
    tok, folder, _ = exports["sentencepiece"]
    loaded = load_tokenizer(folder)
    assert loaded.kind == "huggingface"
    rng, words = random.Random(2), _words()
    for _ in range(50):
        system, turns = _dialogue(rng, words, 2 * rng.randint(1, 3))
        expected = tokenize_dialogue(tok, system, turns, "all_assistant")
        assert tokenize_dialogue(loaded, system, turns, "all_assistant") == expected
    text = "Décodage:  12 345 東京"
    assert loaded.decode(tok.encode(text)) == tok.decode(tok.encode(text))


def test_chat_template_refuses_misordered_roles(exports):
    hf = exports["sentencepiece"][2]
    with pytest.raises(Exception, match="turn 1 has role user, expected assistant"):
        hf.apply_chat_template(
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], tokenize=False
        )


# --- models -------------------------------------------------------------------------------


def _model_folder(model, folder: Path) -> Path:
    return save_model_folder(model, folder, {"stage": "test"})


@pytest.fixture(scope="module")
def spm_model_export(spm_tokenizer, tmp_path_factory):
    torch.manual_seed(0)
    model = Llama(tiny(vocab_size=spm_tokenizer.vocab_size())).eval()
    root = tmp_path_factory.mktemp("lm")
    folder = _model_folder(model, root / "ours")
    return model, folder, export_hf_folder(folder, spm_tokenizer.path, root / "hf")


def test_causal_export_loads_in_transformers_with_the_same_logits(spm_model_export):
    model, _, export = spm_model_export
    assert {p.name for p in export.iterdir()} >= {
        "config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
        "tokenizer_config.json", "tokenizer.model",
    }  # fmt: skip
    config = json.loads((export / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 0)
    generation = json.loads((export / "generation_config.json").read_text())
    assert (generation["eos_token_id"], generation["pad_token_id"]) == (2, 0)
    hf = AutoModelForCausalLM.from_pretrained(str(export)).eval()
    x = torch.randint(
        3, model.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        ours, _ = model(x)
        theirs = hf(x).logits
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


def test_export_loads_back_through_our_loader(spm_model_export):
    model, folder, export = spm_model_export
    assert is_hf_folder(export) and not is_hf_folder(folder)
    back = load_model(export)
    assert back.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


def _greedy_parity(model: Llama, export: Path, eos: int, prompts: list[list[int]], new: int):
    hf = AutoModelForCausalLM.from_pretrained(str(export)).eval()
    out = generate(model, prompts, max_new_tokens=new, temperature=0.0, eos_id=eos)
    ours = getattr(out, "tokens", out)  # a list of token lists
    for prompt, mine in zip(prompts, ours, strict=True):
        with torch.no_grad():
            full = hf.generate(torch.tensor([prompt]), max_new_tokens=new, do_sample=False)
        assert len(mine) > 0 and full[0, len(prompt) :].tolist() == list(mine), prompt


@pytest.mark.parametrize("shape", ["tiny", "demo"])
def test_greedy_generation_matches_transformers(spm_tokenizer, shape, tmp_path):
    vocab = spm_tokenizer.vocab_size()
    torch.manual_seed(1)
    model = Llama({"tiny": tiny, "demo": demo}[shape](vocab_size=vocab)).eval()
    export = export_hf_folder(
        _model_folder(model, tmp_path / "ours"), spm_tokenizer.path, tmp_path / "hf"
    )
    dialogue = [{"role": "user", "content": "What does the reward model score?"}]
    prompts = [
        prompt_tokens(spm_tokenizer, "", dialogue),
        prompt_tokens(spm_tokenizer, "Answer briefly.", dialogue),
        [spm_tokenizer.bos_id(), *spm_tokenizer.encode("The recipe runs")],
    ]
    _greedy_parity(model, export, spm_tokenizer.eos_id(), prompts, 24)


def test_reward_export_reproduces_our_scores(spm_tokenizer, tmp_path):
    torch.manual_seed(2)
    rm = RewardModel(tiny(vocab_size=spm_tokenizer.vocab_size())).eval()
    with torch.no_grad():
        rm.score_head.bias.fill_(0.75)  # a bias HF's score layer cannot hold
    folder = _model_folder(rm, tmp_path / "rm")
    (folder / HEAD_FILE).write_text(json.dumps({"head": "reward", "rm": "safety"}))
    export = export_hf_folder(folder, spm_tokenizer.path, tmp_path / "hf")
    config = json.loads((export / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert len(config["id2label"]) == 1 and config["score_bias"] == pytest.approx(0.75)
    assert (export / HEAD_FILE).is_file()
    eos, pad = spm_tokenizer.eos_id(), config["pad_token_id"]
    rows = [
        [spm_tokenizer.bos_id(), *spm_tokenizer.encode(text), eos]
        for text in ("a safe answer", "no", "a much longer answer with several words in it")
    ]
    width = max(map(len, rows))
    x = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    lengths = torch.tensor([len(r) for r in rows])
    hf = AutoModelForSequenceClassification.from_pretrained(str(export)).eval()
    assert hf.config.num_labels == 1
    with torch.no_grad():
        ours = rm.scores(x, lengths)
        theirs = hf(x).logits[:, 0] + config["score_bias"]
    assert torch.allclose(ours, theirs, atol=1e-4), (ours, theirs)
    back = load_reward_model(export)
    with torch.no_grad():
        assert torch.allclose(back.scores(x, lengths), ours, atol=1e-6)


def test_export_refuses_a_tokenizer_larger_than_the_model(spm_tokenizer, tmp_path):
    model = Llama(tiny(vocab_size=2))  # ids 0..1: EOS (2) lies outside
    folder = _model_folder(model, tmp_path / "ours")
    with pytest.raises(ValueError, match=r"outside the model's vocabulary \(2 in .*config.json\)"):
        export_hf_folder(folder, spm_tokenizer.path, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_export_of_a_missing_folder_names_the_file(spm_tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        export_hf_folder(tmp_path / "nothing", spm_tokenizer.path, tmp_path / "hf")


# --- registration -------------------------------------------------------------------------


def test_registered_versions_are_hf_folders_that_load_as_is(spm_tokenizer, tmp_path):
    """register_model with a tokenizer logs the export: `models:/<name>/<version>` downloaded
    from a real MLflow store loads in transformers (model + chat template) and in the recipe."""
    import mlflow
    from mlflow import MlflowClient

    from tasks.hashing import sha256_of
    from tasks.tracking import open_run, register_model, tracking_uri

    torch.manual_seed(3)
    policy = Llama(tiny(vocab_size=spm_tokenizer.vocab_size())).eval()
    policy_dir = _model_folder(policy, tmp_path / "policy")
    rm = RewardModel(tiny(vocab_size=spm_tokenizer.vocab_size())).eval()
    rm_dir = _model_folder(rm, tmp_path / "rm")
    (rm_dir / HEAD_FILE).write_text(json.dumps({"head": "reward", "rm": "helpfulness"}))
    run = open_run(tmp_path, "unit", "rlhf", {"stage": "rlhf"})
    uri = tracking_uri(tmp_path)
    client = MlflowClient(uri)
    downloaded = {}
    for name, folder in (("policy", policy_dir), ("rm-helpfulness", rm_dir)):
        version = register_model(run, folder, name, "test", tokenizer=spm_tokenizer.path)
        mv = client.get_model_version(name, version)
        assert mv.tags["export"] == "huggingface"
        assert mv.tags["weights_sha256"] == sha256_of(folder / "model.safetensors")
        downloaded[name] = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}",
                dst_path=str(tmp_path / "dl" / name),
                tracking_uri=uri,
            )
        )
    local = downloaded["policy"]
    hf = AutoModelForCausalLM.from_pretrained(str(local)).eval()
    chat = AutoTokenizer.from_pretrained(str(local))
    turns = [{"role": "user", "content": "Which stage comes after SFT?"}]
    ids = chat.apply_chat_template(turns, add_generation_prompt=True, return_dict=False)
    assert ids == prompt_tokens(spm_tokenizer, "", turns)
    with torch.no_grad():
        assert torch.allclose(
            hf(torch.tensor([ids])).logits, policy(torch.tensor([ids]))[0], atol=1e-4
        )
    back = load_model(local)
    assert all(torch.equal(back.state_dict()[k], v) for k, v in policy.state_dict().items())
    back_rm = load_reward_model(downloaded["rm-helpfulness"])
    assert all(torch.equal(back_rm.state_dict()[k], v) for k, v in rm.state_dict().items())
    assert AutoModelForSequenceClassification.from_pretrained(
        str(downloaded["rm-helpfulness"])
    ).config.architectures == ["LlamaForSequenceClassification"]


def test_tied_embeddings_export_and_load_back(spm_tokenizer, tmp_path):
    """Tied input/output embeddings (SmolLM2's layout): one tensor in the file, tied again by
    transformers and by our loader; a tied reward trunk exports too."""
    from dataclasses import replace

    torch.manual_seed(4)
    cfg = replace(tiny(vocab_size=spm_tokenizer.vocab_size()), tie_embeddings=True)
    model = Llama(cfg).eval()
    export = export_hf_folder(
        _model_folder(model, tmp_path / "lm"), spm_tokenizer.path, tmp_path / "hf"
    )
    assert json.loads((export / "config.json").read_text())["tie_word_embeddings"] is True
    hf = AutoModelForCausalLM.from_pretrained(str(export)).eval()
    x = torch.randint(3, cfg.vocab_size, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(hf(x).logits, model(x)[0], atol=1e-4)
    back = load_model(export)
    assert back.output.weight is back.tok_embeddings.weight
    assert torch.equal(back.output.weight, model.output.weight)
    rm = RewardModel(cfg).eval()
    rm_dir = _model_folder(rm, tmp_path / "rm")
    (rm_dir / HEAD_FILE).write_text("{}")
    rm_export = export_hf_folder(rm_dir, spm_tokenizer.path, tmp_path / "hf-rm")
    lengths = torch.tensor([12])
    with torch.no_grad():
        assert torch.allclose(
            load_reward_model(rm_export).scores(x, lengths), rm.scores(x, lengths)
        )
