"""Names of classes, label sets, datasets and projects: what a reader cannot see or tell apart is refused."""

import pytest

from mlcore.types import name_key, name_problem, quoted, strip_invisible


@pytest.mark.parametrize("name, problem", [
    ("", "is empty"),
    ("   ", "is empty"),
    ("\u200b\u200c", "has no visible character"),
    ("a\x07b", "contains the control character '\\x07'"),
    ("tumour\u202eruomut", "contains the text-direction control U+202E"),
    ("x\u2067y", "contains the text-direction control U+2067"),
    ("x" * 101, "is 101 characters long, over the limit of 100"),
])
def test_refused(name, problem):
    assert name_problem(name) == problem


@pytest.mark.parametrize("name", ["Lung / TCGA <b>", "乳腺癌", "\U0001F469\u200d\U0001F52C", "می\u200cخواهم", ".."])
def test_allowed(name):
    assert name_problem(name) is None


def test_strip_invisible_takes_only_the_ends():
    assert strip_invisible("\u200b Lung\u200dTCGA \ufeff") == "Lung\u200dTCGA"
    assert strip_invisible("\u200b\u200b") == ""


@pytest.mark.parametrize("name, shown", [
    ("Lung", "'Lung'"),
    ("O'Brien's set", '"O\'Brien\'s set"'),
    ('the "best" set', "'the \"best\" set'"),
    ('O\'Brien "x"', "\u201cO'Brien \"x\"\u201d"),   # repr would write 'O\\'Brien "x"'
    ("C:\\slides", "'C:\\slides'"),                # repr doubles the backslash
    ("乳腺癌", "'乳腺癌'"),
])
def test_a_name_is_quoted_as_written(name, shown):
    assert quoted(name) == shown
    assert "\\" not in quoted(name).replace(name, "")


def test_names_differing_only_in_case_share_a_key_in_any_script():
    assert name_key("Merge Ω test") == name_key("merge ω TEST")
    assert name_key("Straße") == name_key("STRASSE")
    assert name_key("Cafe\u0301") == name_key("Café")   # decomposed and composed accents alike
    assert name_key("Lung") != name_key("Lungs")
