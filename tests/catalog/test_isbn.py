from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shelfmark.catalog import isbn

digits9 = st.text(alphabet="0123456789", min_size=9, max_size=9)
digits12 = st.sampled_from(["978", "979"]).flatmap(
    lambda prefix: st.text(alphabet="0123456789", min_size=9, max_size=9).map(
        lambda rest: prefix + rest
    )
)


def hyphenate(text: str, cuts: list[int]) -> str:
    for cut in sorted(set(cuts), reverse=True):
        if 0 < cut < len(text):
            text = text[:cut] + "-" + text[cut:]
    return text


class TestNormalize:
    @pytest.mark.parametrize(
        ("given_isbn", "expected"),
        [
            ("0-441-47812-3", "9780441478125"),
            ("0441478123", "9780441478125"),
            ("978-0-441-47812-5", "9780441478125"),
            ("080442957X", "9780804429573"),
            ("0 8044 2957 x", "9780804429573"),
            ("979-10-90636-07-1", "9791090636071"),
        ],
    )
    def test_known_isbns(self, given_isbn: str, expected: str) -> None:
        assert isbn.normalize(given_isbn) == expected

    @pytest.mark.parametrize(
        "bad",
        ["0-441-47812-4", "9780441478126", "12345", "977-0-441-47812-5", "abcdefghij", ""],
    )
    def test_invalid_isbns_are_refused(self, bad: str) -> None:
        with pytest.raises(isbn.InvalidISBN):
            isbn.normalize(bad)

    @given(digits9, st.lists(st.integers(1, 9), max_size=3))
    def test_every_isbn10_maps_to_one_isbn13_and_back(self, body: str, cuts: list[int]) -> None:
        isbn10 = body + isbn.isbn10_check_digit(body)
        isbn13 = isbn.normalize(hyphenate(isbn10, cuts))
        assert len(isbn13) == 13
        assert isbn13.startswith("978")
        assert isbn.normalize(isbn13) == isbn13
        assert isbn.to_isbn10(isbn13) == isbn10

    @given(digits12)
    def test_every_isbn13_is_stable(self, body: str) -> None:
        isbn13 = body + isbn.isbn13_check_digit(body)
        assert isbn.normalize(isbn13) == isbn13
        back = isbn.to_isbn10(isbn13)
        assert (back is None) == isbn13.startswith("979")

    @given(digits9, st.integers(0, 8), st.integers(1, 9))
    def test_a_changed_digit_is_caught(self, body: str, position: int, delta: int) -> None:
        isbn10 = body + isbn.isbn10_check_digit(body)
        wrong = (
            isbn10[:position] + str((int(isbn10[position]) + delta) % 10) + isbn10[position + 1 :]
        )
        with pytest.raises(isbn.InvalidISBN):
            isbn.normalize(wrong)


class TestFindIn:
    def test_marc_qualifier_is_ignored(self) -> None:
        assert isbn.find_in("0441478123 (pbk.)") == "9780441478125"

    def test_no_isbn(self) -> None:
        assert isbn.find_in("no number here") is None
