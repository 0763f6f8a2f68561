"""The text rules of search: folding, index rows, query parsing, typo candidates."""

from __future__ import annotations

import re
import unicodedata

import pytest

from shelfmark.search.text import (
    can_have_typo,
    edits1,
    fold,
    index_row,
    index_terms,
    main_heading,
    parse_query,
    without_article,
)


class TestFold:
    @pytest.mark.parametrize(
        ("text", "folded"),
        [
            ("Görlitz", "gorlitz"),
            ("GÖRLITZ", "gorlitz"),
            ("Straße", "strasse"),
            ("Œuvres complètes", "oeuvres completes"),
            ("Łódź, Ørsted, Þingvellir", "lodz orsted thingvellir"),
            ("İstanbul", "istanbul"),
            ("Toplumsal yap\u0131", "toplumsal yapi"),  # dotless i
            ("Ma\u02bbālī al-sibṭayn", "maali al sibtayn"),  # ayn and other marks go
            ("muzykal\u02b9nai\ufe20a\ufe21 p\u02b9esa", "muzykalnaia pesa"),
            ("Europäisches Kapitalmark[t]recht", "europaisches kapitalmarktrecht"),
            ("The king's towns: identity & survival", "the king s towns identity survival"),
            ("snake_case--and   spaces", "snake case and spaces"),
            ("\uff46\uff55\uff4c\uff4c \uff21\uff22\uff23", "full abc"),  # fullwidth
            ("한국어", "한국어"),  # Hangul comes back together after NFKD
            ("", ""),
        ],
    )
    def test_folds(self, text: str, folded: str) -> None:
        assert fold(text) == folded

    def test_none_is_empty(self) -> None:
        assert fold(None) == ""

    def test_is_idempotent(self) -> None:
        text = "Mémoire de syndicaliste — l'été 1998 [réimpr.]"
        assert fold(fold(text)) == fold(text)

    @pytest.mark.parametrize(
        "text",
        ["Mark[t]: \t a_b--C\x1fd\x00 ", "\u210cistory", "caf\u00e9 [x] A", "ǅ ﬁne ①", "Ⅻ"],
    )
    def test_the_ascii_shortcuts_fold_as_the_rule_says(self, text: str) -> None:
        """ASCII text, and text that NFKD makes ASCII, take a shortcut (bytes.translate);
        the rule it must agree with is the one written in fold's docstring."""
        decomposed = unicodedata.normalize("NFKD", text.casefold())
        bare = "".join(c for c in decomposed if not unicodedata.combining(c))
        bare = re.sub(r"[\u02b0-\u02ff\[\]]", "", bare)
        rule = re.sub(r"[\W_]+", " ", unicodedata.normalize("NFC", bare)).strip()
        assert fold(text) == rule


class TestIndexRow:
    def test_columns_and_headings(self) -> None:
        row = index_row(
            {
                "title": "The Left Hand of Darkness",
                "subtitle": "a novel",
                "contributors": [{"name": "Le Guin, Ursula K.", "role": "author"}],
                "subjects": ["Science fiction -- History.", "science fiction", "Gender."],
                "series": ["Ace science fiction specials"],
                "description": "Genly Ai visits Gethen.",
            }
        )
        assert row.values == {
            "title_key": "left hand of darkness",
            "title_text": "the left hand of darkness a novel",
            "contributors_text": "le guin ursula k",
            "subjects_text": "science fiction history science fiction gender ace science "
            "fiction specials",
            "description_text": "genly ai visits gethen",
            "language": None,
            "material_type": "book",
            "publication_year": None,
        }
        assert row.headings == {"science fiction": "Science fiction", "gender": "Gender"}

    def test_empty_fields(self) -> None:
        row = index_row({"title": "X", "contributors": [], "subjects": None, "series": None})
        assert row.values["contributors_text"] == ""
        assert row.values["description_text"] == ""
        assert row.headings == {}

    def test_terms_are_words_that_a_typo_can_reach(self) -> None:
        values = index_row({"title": "War of 1812 in Ohio", "description": "a" * 65}).values
        assert index_terms(values) == {"war", "ohio"}


def test_main_heading() -> None:
    assert main_heading("World War, 1939-1945 -- Campaigns -- France.") == "World War, 1939-1945"
    assert main_heading("Cookery.") == "Cookery"


def test_without_article() -> None:
    assert without_article("the outlaws") == "outlaws"
    assert without_article("l homme") == "homme"
    assert without_article("the") == "the"
    assert without_article("thermodynamics") == "thermodynamics"


class TestParseQuery:
    def test_stop_words_are_not_required(self) -> None:
        parsed = parse_query("The Art of Public Speaking")
        assert parsed.tokens == ("the", "art", "of", "public", "speaking")
        assert parsed.required == ("art", "public", "speaking")
        assert parsed.phrase == "the art of public speaking"
        assert parsed.key == "art of public speaking"
        assert parsed.prefix

    def test_only_stop_words_are_all_required(self) -> None:
        assert parse_query("the who").required == ("who",)
        assert parse_query("of the").required == ("of", "the")

    def test_a_stop_word_last_is_no_prefix(self) -> None:
        parsed = parse_query("lord of the")
        assert parsed.required == ("lord",)
        assert not parsed.prefix

    def test_one_letter_is_no_prefix(self) -> None:
        assert not parse_query("harry p").prefix

    @pytest.mark.parametrize(
        "text", ["9780465029686", "978-0-465-02968-6", "046502968X", "0-465-02968-x"]
    )
    def test_isbn(self, text: str) -> None:
        assert parse_query(text).isbn == "9780465029686"

    def test_not_an_isbn(self) -> None:
        assert parse_query("9780465029687").isbn is None  # wrong check digit
        assert parse_query("history 9780465029686").isbn is None

    def test_empty(self) -> None:
        assert parse_query("  ").is_empty
        assert parse_query("?!").is_empty
        assert parse_query(None).is_empty


class TestTypos:
    def test_edits1(self) -> None:
        near = edits1("hand")
        assert {"and", "hnad", "band", "hands", "hard"} <= near
        assert "hand" not in near
        assert "hnda" not in near  # two edits away

    def test_non_latin_words_use_their_own_letters(self) -> None:
        near = edits1("мир")
        assert {"мри", "ми", "миир"} <= near
        assert all(c in "мир" for word in near for c in word)

    def test_which_words_can_have_a_typo(self) -> None:
        assert can_have_typo("hand")
        assert not can_have_typo("art")
        assert not can_have_typo("1812")
