import pytest

from tasks.config import ConfigError, flatten, load_config


@pytest.mark.parametrize("preset", ["tiny", "demo"])
def test_presets_load_and_resolve_paths(preset):
    cfg = load_config(preset)
    assert cfg.preset == preset
    assert cfg.run_dir.is_absolute() and cfg.data.catalog.is_absolute()
    assert cfg.data.catalog.exists()


def test_unknown_key_is_rejected_with_file_and_key_named(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("preset: typo\ncorpus:\n  quality:\n    min_wrds: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "corpus.quality.min_wrds: unknown key" in str(err.value)


def test_wrong_type_is_explained(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("preset: bad\nthreads: many\n")
    with pytest.raises(ConfigError, match="threads"):
        load_config(path)


def test_overrides_apply_and_are_typed():
    cfg = load_config("tiny", ["corpus.toxicity.sample_frac=0.5", "seed=7"])
    assert cfg.corpus.toxicity.sample_frac == 0.5 and cfg.seed == 7
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("tiny", ["seed"])


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ConfigError, match="known presets: .*tiny"):
        load_config("nope")


def test_run_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("RECIPE_RUN_DIR", str(tmp_path))
    assert load_config("tiny").run_dir == tmp_path.resolve()


def test_flatten_gives_dotted_params():
    params = flatten(load_config("tiny"))
    assert params["preset"] == "tiny"
    assert "corpus.toxicity.sample_frac" in params and "tokenizer.vocab_size" in params
