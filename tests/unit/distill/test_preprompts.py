"""Safety preprompts: the shipped set covers the three risk categories and the paper's
adjectives, the choice is a deterministic function of (prompt id, seed), `template_share` of
categorised prompts get their category's answer template, and how a preprompt joins a system
prompt."""

import re

import pytest

from tasks.chat.prompt import RISK_CATEGORIES
from tasks.distill.preprompts import (
    PREPROMPTS_PATH,
    Preprompts,
    choose_preprompt,
    load_preprompts,
    read_preprompts,
    with_preprompt,
)

IDS = [f"donotanswer:malicious_uses:{n}" for n in range(1, 1201)]


@pytest.fixture(scope="module")
def pp() -> Preprompts:
    return load_preprompts()


def test_shipped_set_covers_categories_and_adjectives(pp):
    assert PREPROMPTS_PATH.is_file()
    assert set(pp.answer_templates) == set(RISK_CATEGORIES)
    assert all(len(texts) >= 1 for texts in pp.answer_templates.values())
    assert {"responsible", "respectful", "wise"} <= set(pp.adjectives)
    assert len(pp.generic_templates) >= 3
    every_text = pp.all_generic() + [t for ts in pp.answer_templates.values() for t in ts]
    assert len(set(every_text)) == len(every_text)  # no two preprompts are the same
    assert not any("{" in t or "}" in t or "\n" in t for t in every_text)
    # each category's template talks about its own kind of request
    cues = {
        "illicit_criminal": "illegal|crime|criminal",
        "hateful_harmful": "hateful|demean",
        "unqualified_advice": "medical|legal|financial",
    }
    for category, cue in cues.items():
        assert all(re.search(cue, t) for t in pp.answer_templates[category]), category


def test_same_prompt_and_seed_always_give_the_same_preprompt():
    first = [choose_preprompt(i, "illicit_criminal", 7, 0.5) for i in IDS]
    again = [choose_preprompt(i, "illicit_criminal", 7, 0.5) for i in reversed(IDS)][::-1]
    assert first == again  # order of the calls does not matter
    other_seed = [choose_preprompt(i, "illicit_criminal", 8, 0.5) for i in IDS]
    assert sum(a != b for a, b in zip(first, other_seed)) > len(IDS) // 4


@pytest.mark.parametrize("category", RISK_CATEGORIES)
def test_share_one_gives_every_prompt_its_category_template(pp, category):
    picks = [choose_preprompt(i, category, 0, 1.0) for i in IDS[:300]]
    assert {kind for kind, _ in picks} == {"template"}
    assert {text for _, text in picks} == set(pp.answer_templates[category])  # all get used
    others = {t for c in RISK_CATEGORIES if c != category for t in pp.answer_templates[c]}
    assert not {text for _, text in picks} & others


def test_share_zero_and_unknown_category_prompts_get_generic_preprompts(pp):
    generic = set(pp.all_generic())
    for category, share in [("hateful_harmful", 0.0), (None, 1.0), (None, 0.0)]:
        picks = [choose_preprompt(i, category, 3, share) for i in IDS[:200]]
        assert {kind for kind, _ in picks} == {"generic"}
        assert {text for _, text in picks} <= generic


def test_template_share_is_respected_and_monotone():
    share = 0.3
    kinds = [choose_preprompt(i, "unqualified_advice", 11, share)[0] for i in IDS]
    frac = kinds.count("template") / len(IDS)
    assert abs(frac - share) < 0.05, frac
    more = [choose_preprompt(i, "unqualified_advice", 11, 0.6)[0] for i in IDS]
    # raising the share only moves prompts from generic to template
    assert all(m == "template" for k, m in zip(kinds, more) if k == "template")
    assert more.count("template") > kinds.count("template")


def test_generic_preprompts_use_two_different_adjectives(pp):
    # each template as a pattern whose two adjective slots are captured
    patterns = [
        re.compile(
            re.escape(t)
            .replace(r"\{adj1\}", r"(?P<adj1>\w+)")
            .replace(r"\{adj2\}", r"(?P<adj2>\w+)")
        )
        for t in pp.generic_templates
    ]
    seen_adjectives, seen_templates = set(), set()
    for prompt_id in IDS:
        kind, text = choose_preprompt(prompt_id, None, 5, 0.0)
        matches = [(n, p.fullmatch(text)) for n, p in enumerate(patterns) if p.fullmatch(text)]
        assert kind == "generic" and len(matches) == 1, text
        n, match = matches[0]
        adj1, adj2 = match.group("adj1"), match.group("adj2")
        assert adj1 != adj2 and {adj1, adj2} <= set(pp.adjectives), text
        assert re.search(rf"\b{adj1}\b.*\b{adj2}\b", text)
        seen_adjectives.update((adj1, adj2))
        seen_templates.add(n)
    assert seen_adjectives == set(pp.adjectives)  # every adjective shows up over 1200 prompts
    assert seen_templates == set(range(len(pp.generic_templates)))


def test_a_given_set_is_used_instead_of_the_shipped_one():
    tiny = Preprompts(
        generic_templates=("Be {adj1} and {adj2}.",),
        adjectives=("calm", "kind"),
        answer_templates={c: (f"answer {c}",) for c in RISK_CATEGORIES},
    )
    assert choose_preprompt("p1", "hateful_harmful", 0, 1.0, preprompts=tiny) == (
        "template",
        "answer hateful_harmful",
    )
    kind, text = choose_preprompt("p1", "hateful_harmful", 0, 0.0, preprompts=tiny)
    assert kind == "generic" and text in {"Be calm and kind.", "Be kind and calm."}


@pytest.mark.parametrize(
    "category, share", [("violence", 0.5), ("illicit_criminal", 1.5), ("illicit_criminal", -0.1)]
)
def test_bad_arguments_raise(category, share):
    with pytest.raises(ValueError):
        choose_preprompt("p", category, 0, share)


def test_read_preprompts_rejects_a_bad_file(tmp_path):
    good = PREPROMPTS_PATH.read_text(encoding="utf-8")
    cases = {
        "template without adj2": good.replace(
            "You are a {adj1} and {adj2} assistant. You never",
            "You are a {adj1} assistant. You never",
        ),
        "category missing": good.replace("  unqualified_advice:", "  other_category:"),
        "one adjective": re.sub(r"adjectives:\n(    - \w+\n)+", "adjectives:\n    - wise\n", good),
    }
    for name, text in cases.items():
        assert text != good, name
        path = tmp_path / f"{name.replace(' ', '_')}.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError):
            read_preprompts(path)
    (tmp_path / "good.yaml").write_text(good, encoding="utf-8")
    assert read_preprompts(tmp_path / "good.yaml") == load_preprompts()


def test_with_preprompt_prefixes_the_system_prompt():
    pre = "You are a wise and safe assistant."
    assert with_preprompt("", pre) == pre
    assert with_preprompt(None, "  " + pre + "\n") == pre
    assert with_preprompt("Always answer as a pirate.", pre) == (
        "You are a wise and safe assistant.\n\nAlways answer as a pirate."
    )
    with pytest.raises(ValueError):
        with_preprompt("Always answer as a pirate.", "   ")
