import polars as pl
import pytest

from data_contracts import CONTRACTS, ContractError, get_contract


def _raw(**cols):
    base = {
        "doc_id": ["a", "b", "c"],
        "source": ["news", "news", "wiki"],
        "domain": ["news", "news", "wikipedia"],
        "url": [None, "https://x.org/1", None],
        "title": ["t", None, None],
        "text": ["one doc", "two doc", "three doc"],
        "factual": [True, True, True],
        "license": ["MIT"] * 3,
        "location": ["f:1", "f:2", "f:3"],
    }
    base.update(cols)
    return pl.DataFrame(base)


def test_valid_frame_passes_and_is_put_in_contract_order():
    df = _raw().select(list(reversed(_raw().columns)))
    out = get_contract("raw_documents").validate(df)
    assert out.columns == get_contract("raw_documents").schema.names


def test_bad_frame_lists_every_failure_with_examples():
    df = _raw(doc_id=["a", "a", "c"], text=["ok", "   ", ""], source=["news", "", "wiki"])
    with pytest.raises(ContractError) as err:
        get_contract("raw_documents").validate(df)
    failures = {(f["column"], f["check"]): f for f in err.value.failures}
    assert ("doc_id", "field_uniqueness") in failures
    assert ("source", "str_length(1, None)") in failures
    text_failure = next(f for (col, _), f in failures.items() if col == "text")
    assert text_failure["rows"] == 2
    assert [e["row"] for e in text_failure["examples"]] == [1, 2]
    message = str(err.value)
    assert "raw_documents" in message and "doc_id" in message and "text" in message


def test_structural_failures_name_missing_extra_and_wrong_dtype():
    df = _raw(factual=["yes", "no", "yes"]).drop("license").with_columns(pl.lit(1).alias("extra"))
    with pytest.raises(ContractError) as err:
        get_contract("raw_documents").validate(df)
    checks = {f["column"]: f["check"] for f in err.value.failures}
    assert checks["license"] == "column is missing"
    assert checks["extra"] == "column is not in the contract"
    assert "expected Boolean" in checks["factual"]


def test_split_valid_keeps_first_duplicate_and_explains_each_bad_row():
    df = _raw(doc_id=["a", "a", "c"], text=["ok", "fine", " "])
    valid, invalid = get_contract("raw_documents").split_valid(df)
    assert valid["doc_id"].to_list() == ["a"]
    errors = dict(zip(invalid["location"], invalid["contract_error"]))
    assert "doc_id failed field_uniqueness" in errors["f:2"]
    assert "text failed" in errors["f:3"]
    assert valid.height + invalid.height == df.height


def test_all_null_nullable_column_is_accepted():
    df = _raw(title=[None, None, None])
    assert df.schema["title"] == pl.Null
    assert get_contract("raw_documents").validate(df).schema["title"] == pl.Utf8


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_pandera_model_and_arrow_schema_agree(name):
    contract = CONTRACTS[name]
    model_columns = list(contract.model.to_schema().columns)
    assert model_columns == contract.schema.names
    assert contract.version


def test_unknown_contract_is_a_clear_error():
    with pytest.raises(KeyError, match="no data contract named 'nope'"):
        get_contract("nope")


def test_lossless_widening_is_applied_but_narrowing_is_a_failure():
    c = get_contract("toxicity_scores")
    df = pl.DataFrame(
        {"doc_id": ["a"], "source": ["s"], "n_lines": [3], "score": [0.5], "toxic": [False]}
    )
    widened = c.validate(
        df.with_columns(pl.col("n_lines").cast(pl.UInt32), pl.col("score").cast(pl.Float32))
    )
    assert widened.schema["n_lines"] == pl.Int64 and widened.schema["score"] == pl.Float64
    with pytest.raises(ContractError, match="n_lines"):
        c.validate(df.with_columns(pl.col("n_lines").cast(pl.UInt64)))
    with pytest.raises(ContractError, match="score"):
        c.validate(df.with_columns(pl.col("score").cast(pl.Utf8)))


def test_split_valid_raises_when_no_row_can_carry_the_failure():
    from data_contracts.base import Contract

    c = get_contract("raw_documents")
    # a frame-level check (here: the frame must not be empty) has no row index
    import pandera.polars as pap

    class NonEmpty(c.model):
        @pap.dataframe_check
        def has_rows(cls, data) -> bool:
            return data.lazyframe.collect().height > 0

    strict = Contract("non_empty", "1.0", NonEmpty, c.schema, "test")
    with pytest.raises(ContractError, match="non_empty"):
        strict.split_valid(_raw().clear())


def test_preference_pairs_check_the_prompt_shape_and_the_safety_bin():
    from tasks.records import dialogue_frame

    good = dict(
        pair_id="p1",
        prompt_id="d1",
        system="",
        prompt=[{"role": "user", "content": "hi"}],
        chosen="hello",
        rejected="go away",
        rating="better",
        kind="safety",
        safety_bin="chosen_safe_rejected_unsafe",
        chosen_safe=True,
        rejected_safe=False,
        chosen_score=0.9,
        rejected_score=0.2,
        is_safety=True,
        category="adversarial",
        risk_category="illicit_criminal",
        reference=None,
        source="donotanswer",
        model_chosen="sft",
        model_rejected="pretrained",
        temperature_chosen=0.6,
        temperature_rejected=1.3,
        chosen_ended=True,
        rejected_ended=False,
        batch=0,
        split="train",
        annotator="rule",
    )
    bad_prompt = dict(
        good,
        pair_id="p2",
        prompt=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
    )
    bad_bin = dict(good, pair_id="p3", safety_bin="both_safe")
    contract = get_contract("preference_pairs")
    valid, invalid = contract.split_valid(
        dialogue_frame([good, bad_prompt, bad_bin], "preference_pairs")
    )
    assert valid["pair_id"].to_list() == ["p1"]
    errors = dict(zip(invalid["pair_id"], invalid["contract_error"]))
    assert "end with the user" in errors["p2"] or "prompt_ends_with_user" in errors["p2"]
    assert "bin" in errors["p3"]
