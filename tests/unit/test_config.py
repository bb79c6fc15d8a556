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


# --- strict types: a bool is not a number, a number is not a bool ----------------------------


@pytest.mark.parametrize(
    "override, key, got",
    [
        ("corpus.quality.min_words=true", "corpus.quality.min_words", "True"),
        ("corpus.quality.min_words=30.0", "corpus.quality.min_words", "30.0"),
        ("sft.gatt.enabled=1", "sft.gatt.enabled", "1"),
        ("corpus.toxicity.threshold=true", "corpus.toxicity.threshold", "True"),
    ],
)
def test_strict_types_reject_lax_coercions(override, key, got):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [override])
    assert f"  - {key}: " in str(err.value) and f"(got {got})" in str(err.value)


def test_override_strings_still_parse_to_the_field_type():
    cfg = load_config(
        "tiny",
        [
            "corpus.quality.min_words=30",
            "sft.gatt.enabled=false",
            "pretrain.train.lr=3e-4",
            "corpus.toxicity.sample_frac=1",
        ],
    )
    assert cfg.corpus.quality.min_words == 30 and type(cfg.corpus.quality.min_words) is int
    assert cfg.sft.gatt.enabled is False
    assert cfg.pretrain.train.lr == 3e-4  # PyYAML alone reads `3e-4` as a string
    assert cfg.corpus.toxicity.sample_frac == 1.0


def test_quoted_number_in_a_preset_is_rejected(tmp_path):
    path = tmp_path / "quoted.yaml"
    path.write_text('preset: quoted\nthreads: "2"\n')
    with pytest.raises(ConfigError, match=r"threads: Input should be a valid integer \(got '2'\)"):
        load_config(path)


# `--rerun` of a task that does not exist fails right after the config loads: should the config
# check ever let the mistake through, these tests fail at once instead of running a stage.
NO_RUN = ["--rerun", "no_such_task"]


def test_cli_prints_one_clear_error_for_a_bool_given_to_a_number(capsys):
    from flows.__main__ import main

    assert main(["run", "--preset", "tiny", "--set", "corpus.quality.min_words=true", *NO_RUN]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "corpus.quality.min_words: Input should be a valid integer (got True)" in err


# --- input files named in a preset must exist ------------------------------------------------

USER_SOURCE = "{name: mine, domain: news, factual: true, license: own, adapter: jsonl, path: %s}"


def _preset(folder, body: str):
    path = folder / "mine.yaml"
    path.write_text(f"preset: mine\n{body}")
    return path


def test_missing_user_source_is_named_with_its_resolved_path(tmp_path):
    path = _preset(tmp_path, f"data:\n  user_sources: [{USER_SOURCE % 'data/notes.jsonl'}]\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert (
        f"data.user_sources.0.path: {tmp_path / 'data' / 'notes.jsonl'} does not exist "
        "(relative paths resolve against the preset's folder)"
    ) in str(err.value)


def test_relative_input_paths_resolve_against_the_preset_folder(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.jsonl").write_text('{"text": "hello"}\n')
    (tmp_path / "chats.jsonl").write_text("")
    (tmp_path / "hh.jsonl").write_text("")
    path = _preset(
        tmp_path,
        f"data:\n  user_sources: [{USER_SOURCE % 'data/*.jsonl'}]\n"
        "sft:\n  sources:\n    user: [{name: chats, path: chats.jsonl}]\n"
        "reward:\n  collection:\n    label_files: [{name: hh, path: hh.jsonl}]\n",
    )
    monkeypatch.chdir(tmp_path.parent)  # not the preset's folder: the working directory is not used
    cfg = load_config(path)
    assert cfg.data.user_sources[0].path == str(tmp_path / "data" / "*.jsonl")
    assert cfg.sft.sources.user[0].path == tmp_path / "chats.jsonl"
    assert cfg.reward.collection.label_files[0].path == tmp_path / "hh.jsonl"


def test_every_missing_input_file_is_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(
            "tiny",
            [
                f"data.user_sources=[{USER_SOURCE % (tmp_path / '*.csv')}]",
                f"sft.sources.user=[{{name: chats, path: {tmp_path / 'chats.jsonl'}}}]",
                f"reward.collection.label_files=[{{name: hh, path: {tmp_path}}}]",
                f"sft.sources.borderline.path={tmp_path / 'borderline.yaml'}",
            ],
        )
    text = str(err.value)
    assert "(4 problem(s))" in text
    assert f"data.user_sources.0.path: {tmp_path / '*.csv'} matches no file" in text
    assert f"sft.sources.user.0.path: {tmp_path / 'chats.jsonl'} does not exist" in text
    assert f"reward.collection.label_files.0.path: {tmp_path} is not a file" in text
    assert f"sft.sources.borderline.path: {tmp_path / 'borderline.yaml'} does not exist" in text


def test_folder_source_without_member_is_caught_at_load(tmp_path):
    with pytest.raises(
        ConfigError, match=r"data.user_sources.0.path: .* is a folder; set `member`"
    ):
        load_config("tiny", [f"data.user_sources=[{USER_SOURCE % tmp_path}]"])


def test_cli_prints_one_clear_error_for_a_missing_file(capsys, tmp_path):
    from flows.__main__ import main

    missing = tmp_path / "chats.jsonl"
    assert (
        main(
            [
                "run",
                "--preset",
                "tiny",
                "--stage",
                "sft",
                "--set",
                f"sft.sources.user=[{{name: chats, path: {missing}}}]",
                *NO_RUN,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"sft.sources.user.0.path: {missing} does not exist" in err


# --- source names are unique ----------------------------------------------------------------


def test_user_source_named_like_a_catalog_source_is_caught_at_load(tmp_path):
    (tmp_path / "n.jsonl").write_text("")
    spec = USER_SOURCE.replace("name: mine", "name: fortunes") % (tmp_path / "n.jsonl")
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [f"data.user_sources=[{spec}]"])
    assert "data.user_sources.0.name: 'fortunes' is already the name of a catalog source" in str(
        err.value
    )


def test_duplicate_names_within_a_list_and_against_built_in_sft_sources(tmp_path):
    (tmp_path / "a.jsonl").write_text("")
    a = tmp_path / "a.jsonl"
    with pytest.raises(ConfigError) as err:
        load_config(
            "tiny",
            [
                f"data.user_sources=[{USER_SOURCE % a}, {USER_SOURCE % a}]",
                f"sft.sources.user=[{{name: chitchat, path: {a}}}]",
                f"reward.collection.label_files=[{{name: hh, path: {a}}}, {{name: hh, path: {a}}}]",
            ],
        )
    text = str(err.value)
    assert "data.user_sources.1.name: 'mine' is already the name of data.user_sources.0" in text
    assert (
        "sft.sources.user.0.name: 'chitchat' is already the name of a built-in SFT source" in text
    )
    assert (
        "reward.collection.label_files.1.name: 'hh' is already the name of "
        "reward.collection.label_files.0"
    ) in text
