from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import unicodedata
from collections import Counter
from datetime import date
from decimal import Decimal
from importlib import resources
from itertools import islice
from pathlib import Path

import pymarc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import MARC_DIR, unreachable
from shelfmark.interop.marc import (
    UNTITLED,
    BibData,
    Contributor,
    HoldingData,
    MarcFileError,
    MarcSourceError,
    MarcWriteError,
    ReadResult,
    format_control_number,
    iter_marc,
    map_holdings,
    map_record,
    material_type,
    parse_price,
    record_from_bib,
    record_from_source,
    split_control_number,
    strip_isbd,
    to_marc21,
    to_marcxml,
)
from shelfmark.interop.marc_map import MAPPED_TAGS

LOC_SAMPLE = "loc-books-2016-sample-10k.mrc"
# Fields a bib keeps in its own columns; `source`, `warnings` and `invalid_isbns` are not
# written by record_from_bib.
BIB_COLUMNS = [
    f.name
    for f in dataclasses.fields(BibData)
    if f.name not in ("source", "warnings", "invalid_isbns")
]


@pytest.fixture(scope="module")
def marc_dir() -> Path:
    if not MARC_DIR.is_dir():
        reason = f"the MARC test data is not at {MARC_DIR}"
        unreachable(reason)
    return MARC_DIR


@pytest.fixture(scope="module")
def loc_head(marc_dir: Path) -> list[ReadResult]:
    """The first 3,000 records of the Library of Congress sample."""
    return list(islice(iter_marc(marc_dir / LOC_SAMPLE), 3000))


@pytest.fixture(scope="module")
def loc(loc_head: list[ReadResult]) -> dict[str, pymarc.Record]:
    return {r.control_number: r.record for r in loc_head if r.control_number and r.record}


def read(data: bytes, *, tags: frozenset[str] | None = None) -> list[ReadResult]:
    return list(iter_marc(io.BytesIO(data), tags=tags))


def as_imported(result: ReadResult) -> tuple[object, ...]:
    """All that an import takes from a read result."""
    if result.record is None:
        return (result.index, result.error, result.control_number)
    return (
        result.index, map_record(result.record), map_holdings(result.record), result.marc21(),
        result.warnings, result.control_number, str(result.record.leader),
    )  # fmt: skip


def with_bytes_in_field(record: bytes, tag: bytes, at: int, new: bytes) -> bytes:
    """The record with bytes of its field `tag`, from `at` on, replaced by as many `new`."""
    base = int(record[12:17])
    for start in range(24, base - 1, 12):
        if record[start : start + 3] == tag:
            begin = base + int(record[start + 7 : start + 12]) + at
            return record[:begin] + new + record[begin + len(new) :]
    raise AssertionError(f"no field {tag!r}")


def only_record(data: bytes) -> pymarc.Record:
    [result] = read(data)
    assert result.record is not None, result.error
    return result.record


def make_record(leader: str = "00000nam a2200000 a 4500", *fields: pymarc.Field) -> pymarc.Record:
    record = pymarc.Record()
    record.leader = pymarc.Leader(leader)
    record.fields.extend(fields)
    return record


def datafield(tag: str, indicators: str = "  ", **subfields: str) -> pymarc.Field:
    return pymarc.Field(
        tag=tag,
        indicators=pymarc.Indicators(indicators[0], indicators[1]),
        subfields=[pymarc.Subfield(code.rstrip("_"), value) for code, value in subfields.items()],
    )


def control(tag: str, data: str) -> pymarc.Field:
    return pymarc.Field(tag=tag, data=data)


def fields_of(record: pymarc.Record) -> list[tuple[str, object]]:
    return [
        (f.tag, f.data if f.control_field else (f.indicators, list(f.subfields)))
        for f in record.fields
    ]


def assert_read_as_pymarc_reads(part: ReadResult, whole: ReadResult) -> None:
    """`part`, read with only the mapped tags, holds what pymarc read of those in `whole`
    (a record kept as its own bytes), or all of `whole` (a record repaired as it was read,
    or one without any of those tags)."""
    assert part.error == whole.error
    if whole.record is None:
        assert part.record is None
        return
    assert part.record is not None
    assert str(part.record.leader) == str(whole.record.leader)
    wanted = [f for f in whole.record.fields if f.tag in MAPPED_TAGS]
    if part.raw is None or not wanted:
        wanted = whole.record.fields
    assert [(type(f), f.control_field) for f in part.record.fields] == [
        (type(f), f.control_field) for f in wanted
    ]
    assert fields_of(part.record) == [
        (f.tag, f.data if f.control_field else (f.indicators, list(f.subfields))) for f in wanted
    ]


class OnlyRead:
    """A stream that can only be read: no seek, no peek, no fileno."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)


class TestIterMarc:
    @pytest.mark.parametrize(
        ("name", "records", "errors"),
        [
            ("marc.dat", 20, 0),
            ("batch.xml", 2, 0),
            ("marc8.dat", 1, 0),
            ("diacritic.dat", 1, 0),
            ("utf8_invalid.mrc", 1, 0),
            ("bad_records.mrc", 2, 7),
        ],
    )
    def test_small_files_read_as_documented(
        self, marc_dir: Path, name: str, records: int, errors: int
    ) -> None:
        results = list(iter_marc(marc_dir / name))
        assert [r.index for r in results] == list(range(1, records + errors + 1))
        assert sum(r.record is not None for r in results) == records
        assert sum(r.error is not None for r in results) == errors
        assert all((r.record is None) == (r.error is not None) for r in results)

    def test_the_loc_sample_reads_without_a_problem(self, marc_dir: Path) -> None:
        count = 0
        for result in iter_marc(marc_dir / LOC_SAMPLE):
            count += 1
            assert result.record is not None, result.error
            assert not result.warnings
        assert count == 10_000

    def test_bad_records_explain_themselves_and_reading_goes_on(self, marc_dir: Path) -> None:
        results = list(iter_marc(marc_dir / "bad_records.mrc"))
        assert [r.index for r in results if r.record is not None] == [1, 8]
        first, again = results[0].record, results[7].record
        assert first is not None
        assert again is not None
        assert map_record(first) == map_record(again)
        assert map_record(first).title == "The pragmatic programmer"
        errors = [r.error or "" for r in results if r.record is None]
        assert "base address (leader/12-16) is 99937" in errors[0]
        assert "base address (leader/12-16) is 0" in errors[1]
        assert "not a multiple of 12" in errors[2]
        assert "not a number: b'f0037'" in errors[4]
        assert "no fields" in errors[5]
        assert "no end-of-record mark" in errors[6]

    def test_a_broken_record_is_still_named_by_its_control_number(self, marc_dir: Path) -> None:
        data = (marc_dir / "marc.dat").read_bytes()
        broken = data[:12] + b"99999" + data[17:]  # base address of the first record
        results = read(broken)
        assert results[0].record is None
        assert results[0].control_number == "11778504"
        assert [r.record is not None for r in results] == [False] + [True] * 19

    def test_a_wrong_length_in_the_leader_is_repaired(self, marc_dir: Path) -> None:
        data = (marc_dir / "marc.dat").read_bytes()
        results = read(b"01061" + data[5:])  # the record has 1060 bytes
        assert len(results) == 20
        assert results[0].record is not None
        assert results[0].warnings == (
            "the leader gives a length of 1061 bytes, the record has 1060",
        )
        assert all(r.record is not None and not r.warnings for r in results[1:])

    def test_garbage_between_records_costs_only_the_record_it_hits(self, marc_dir: Path) -> None:
        records = (marc_dir / "marc.dat").read_bytes().split(b"\x1d")[:3]
        data = records[0] + b"\x1d" + b"garbage" + records[1] + b"\x1d" + records[2] + b"\x1d"
        assert [r.record is not None for r in read(data)] == [True, False, True]

    def test_line_ends_between_records_are_ignored(self, marc_dir: Path) -> None:
        records = (marc_dir / "marc.dat").read_bytes().split(b"\x1d")[:-1]
        data = b"\xef\xbb\xbf" + b"".join(r + b"\x1d\r\n" for r in records)
        results = list(iter_marc(OnlyRead(data)))  # type: ignore[arg-type]
        assert len(results) == 20
        assert all(r.record is not None for r in results)

    def test_marc8_diacritics_come_out_as_unicode(self, marc_dir: Path) -> None:
        [result] = iter_marc(marc_dir / "marc8.dat")
        assert result.record is not None
        uniform_title = result.record["240"]["a"]
        assert uniform_title == "De la solitude \u00e0 la communaut\u00e9."
        assert unicodedata.is_normalized("NFC", uniform_title)
        assert result.record.leader[9] == "a"

    def test_utf8_diacritics_are_kept(self, marc_dir: Path) -> None:
        record = only_record((marc_dir / "diacritic.dat").read_bytes())
        assert "Hemmungs Wirte\u0301n" in record["505"]["a"]  # as catalogued: decomposed
        assert "Hemmungs Wirtén" in unicodedata.normalize("NFC", record["505"]["a"])

    def test_invalid_utf8_is_replaced_with_a_warning(self, marc_dir: Path) -> None:
        data = (marc_dir / "diacritic.dat").read_bytes()
        assert data.count(b"e\xcc\x81") == 1
        [result] = read(data.replace(b"e\xcc\x81", b"e\xff\x81"))
        assert result.record is not None
        assert "Hemmungs Wirte\ufffd\ufffdn" in result.record["505"]["a"]
        assert result.warnings == ("invalid UTF-8 replaced by U+FFFD",)

    def test_utf8_invalid_mrc_drops_the_stray_character_before_a_subfield_code(
        self, marc_dir: Path
    ) -> None:
        # The file holds no invalid UTF-8: its damage is U+FFFD written where the 260 $b
        # subfield code belongs ("\x1f\xef\xbf\xbdbAssociation…").
        [result] = iter_marc(marc_dir / "utf8_invalid.mrc")
        assert result.record is not None
        assert result.warnings == ("field 260: stray U+FFFD before subfield code 'b' dropped",)
        assert result.record["260"].get_subfields("b") == ["Association of Teacher Educators]"]
        assert map_record(result.record).publisher == "Association of Teacher Educators]"

    def test_utf8_marked_as_marc8_is_read_as_utf8(self, marc_dir: Path) -> None:
        data = (marc_dir / "diacritic.dat").read_bytes()
        [result] = read(data[:9] + b" " + data[10:])
        assert result.record is not None
        assert "Wirte\u0301n" in result.record["505"]["a"]
        assert result.warnings == ("leader/09 is ' ' (MARC-8), but the record is UTF-8",)

    def test_marcxml_is_recognised_and_read(self, marc_dir: Path) -> None:
        results = list(iter_marc(marc_dir / "batch.xml"))
        assert [r.control_number for r in results] == ["(DLC)5637241", "12149120"]
        assert all(r.record is not None and not r.warnings for r in results)
        first = results[0].record
        assert first is not None
        assert str(first.leader) == "00925njm a22002777a 4500"  # leader/09 now says Unicode
        assert first["700"].get_subfields("4") == ["prf"]

    def test_marcxml_that_breaks_off_reports_the_rest_as_one_error(self, marc_dir: Path) -> None:
        data = (marc_dir / "batch.xml").read_bytes()
        cut = data.index(b"<marc:record", data.index(b"</marc:record>"))
        results = read(data[: cut + 40])
        assert results[0].record is not None
        assert results[1].record is None
        assert "XML stops being well-formed" in (results[1].error or "")

    def test_a_marcxml_record_with_a_bad_leader_is_an_error(self) -> None:
        xml = (
            b'<collection xmlns="http://www.loc.gov/MARC21/slim"><record>'
            b'<leader>short</leader><controlfield tag="001">42</controlfield>'
            b"</record></collection>"
        )
        [result] = read(xml)
        assert result.record is None
        assert result.error == "the leader is not 24 ASCII characters: 'short'"
        assert result.control_number == "42"

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (b"", "empty"),
            (b"\n\r\n   \n", "empty"),
            (b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n" * 50, "not a MARC21"),
            (b'{"leader": "00000nam a2200000 a 4500"}', "not a MARC21"),
            (b"12345,title,author\n1,Dune,Herbert\n", "not a MARC21"),
            (b"<html><body>not a catalogue</body></html>", "root element is <html>"),
            (b"<collection><record>", "not well-formed XML"),
            (b'<collection xmlns="http://www.loc.gov/MARC21/slim"/>', "holds no records"),
        ],
    )
    def test_a_file_that_is_not_marc_fails_as_a_whole(self, data: bytes, message: str) -> None:
        with pytest.raises(MarcFileError, match=message):
            read(data)

    def test_a_missing_file_fails_as_a_whole(self, tmp_path: Path) -> None:
        with pytest.raises(MarcFileError, match="cannot open"):
            list(iter_marc(tmp_path / "missing.mrc"))

    def test_a_run_without_end_of_record_mark_is_cut_at_the_maximum_length(self) -> None:
        leader = b"00100nam a2200037 a 4500"
        results = read(leader + b"x" * 250_000)
        assert len(results) == 3
        assert all("no end-of-record mark" in (r.error or "") for r in results)

    def test_reading_only_the_mapped_fields_imports_the_loc_sample_the_same(
        self, marc_dir: Path
    ) -> None:
        path = marc_dir / LOC_SAMPLE
        parts = iter_marc(path, tags=MAPPED_TAGS)
        for whole, part in zip(iter_marc(path), parts, strict=True):
            assert as_imported(part) == as_imported(whole)
            assert_read_as_pymarc_reads(part, whole)
            assert part.record is not None
            assert part.raw is not None
            assert {f.tag for f in part.record.fields} <= MAPPED_TAGS

    @pytest.mark.parametrize(
        ("at", "new", "error", "warning"),
        [
            (0, "é".encode(), "bytes that are not ascii", None),  # indicators pymarc refuses
            (3, "é".encode(), None, "subfield code U+00E9 (é) is not ASCII"),
        ],
    )
    def test_fields_left_unread_still_fail_and_warn_as_when_read(
        self, marc_dir: Path, at: int, new: bytes, error: str | None, warning: str | None
    ) -> None:
        # Field 906 is not mapped: a record that reads only the mapped fields reads it all
        # when its other fields can fail or warn.
        data = with_bytes_in_field((marc_dir / "diacritic.dat").read_bytes(), b"906", at, new)
        [whole], [part] = read(data), read(data, tags=MAPPED_TAGS)
        assert as_imported(part) == as_imported(whole)
        if error is None:
            assert whole.error is None
        else:
            assert whole.error is not None
            assert whole.error.startswith(error)
        assert (warning is None) == (not whole.warnings)
        assert all(warning in w for w in whole.warnings)

    @pytest.mark.parametrize(
        "name",
        ["marc.dat", "marc8.dat", "diacritic.dat", "utf8_invalid.mrc", "bad_records.mrc"],
    )
    def test_the_mapped_fields_read_alone_are_what_pymarc_reads(
        self, marc_dir: Path, name: str
    ) -> None:
        data = (marc_dir / name).read_bytes()
        for whole, part in zip(read(data), read(data, tags=MAPPED_TAGS), strict=True):
            assert_read_as_pymarc_reads(part, whole)

    def test_empty_subfields_and_a_field_without_any_are_read_as_pymarc_reads_them(
        self,
    ) -> None:
        # A record written by hand: 245 holds an empty subfield between two others, 650
        # none at all (its indicators only), 001 and 500 (not mapped) are plain.
        fields = [b"001", b"245", b"500", b"650"]
        data = [b"ocm1\x1e", "10\x1faTïtle\x1f\x1fbsub\x1e".encode(), b"  \x1faNote\x1e", b" 0\x1e"]
        directory, offset = b"", 0
        for tag, body in zip(fields, data, strict=True):
            directory += b"%s%04d%05d" % (tag, len(body), offset)
            offset += len(body)
        base = 24 + len(directory) + 1
        body = directory + b"\x1e" + b"".join(data) + b"\x1d"
        record = b"%05dnam a22%05d a 4500" % (24 + len(body), base) + body
        [whole], [part] = read(record), read(record, tags=MAPPED_TAGS)
        assert whole.warnings == ()
        assert whole.raw is not None  # kept as it is: read by Shelfmark itself
        assert_read_as_pymarc_reads(part, whole)
        assert part.record is not None
        assert [f.tag for f in part.record.fields] == ["001", "245", "650"]

    def test_nothing_is_read_before_the_first_record_is_asked_for(self) -> None:
        results = iter_marc(io.BytesIO(b"garbage"))
        with pytest.raises(MarcFileError):
            next(results)


class TestMapRecord:
    def test_a_book_with_subtitle_illustrator_and_isbn_10(
        self, loc: dict[str, pymarc.Record]
    ) -> None:
        bib = map_record(loc["(DLC)00008090"])
        assert bib.title == "Remember the ladies"
        assert bib.subtitle == "a story about Abigail Adams"
        assert bib.contributors == (
            Contributor("Ferris, Jeri", "author"),
            Contributor("Beier, Ellen", "illustrator"),  # $e "ill."
        )
        assert bib.isbns == ("9781575052922",)  # 020 $a 157505292X (lib. bdg. : alk. paper)
        assert bib.publisher == "Carolrhoda Books"
        assert bib.publication_year == 2001  # 260 $c "c2001."
        assert bib.language == "eng"
        assert bib.series == ("A creative minds biography",)  # 440
        assert bib.subjects == ("Presidents' spouses", "First ladies", "Women")
        assert bib.description is not None
        assert bib.description.startswith("Chronicles the life and achievements")
        assert bib.material_type == "book"
        assert bib.control_number == "(DLC)00008090"
        assert bib.warnings == ()

    def test_a_spanish_translation(self, loc: dict[str, pymarc.Record]) -> None:
        bib = map_record(loc["(DLC)00013002"])
        assert bib.title == "El principito"
        assert bib.contributors == (
            Contributor("Saint-Exupéry, Antoine de", "author"),
            Contributor("Carril, Bonifacio del", "contributor"),
        )
        assert bib.isbns == ("9780156013925",)
        assert bib.publication_year == 2001  # 260 $c "[2001?], c1971."
        assert bib.language == "spa"
        assert bib.series == ("Harvest book",)

    def test_a_german_collection_with_series_in_490_and_830(
        self, loc: dict[str, pymarc.Record]
    ) -> None:
        bib = map_record(loc["(DLC)00041360"])
        assert bib.title == "Heinrich von Kleist und die Aufklärung"
        assert bib.contributors == (Contributor("Mehigan, Timothy J.", "contributor"),)
        assert bib.isbns == ("9781571130471",)
        assert bib.language == "ger"
        assert bib.subjects == ("Enlightenment", "Germany")  # 650 and 651
        assert bib.series == (
            "Studies in German literature, linguistics, and culture",
            "Studies in German literature, linguistics, and culture (Unnumbered)",
        )

    def test_a_japanese_book_in_romanisation(self, loc: dict[str, pymarc.Record]) -> None:
        bib = map_record(loc["(DLC)00271347"])
        assert bib.title == "Nihon no miira shinkō"
        assert bib.contributors == (Contributor("Naitō, Masatoshi", "author"),)
        assert bib.isbns == ("9784831872449",)  # from 483187244X
        assert bib.publisher == "Hōzōkan"
        assert bib.publication_year == 1999
        assert bib.edition == "Shohan"
        assert bib.language == "jpn"

    def test_a_russian_conference_as_main_entry(self, loc: dict[str, pymarc.Record]) -> None:
        bib = map_record(loc["(DLC)00270690"])
        assert bib.language == "rus"
        assert bib.contributors[0].role == "author"  # 111, no relator
        assert bib.contributors[0].name.startswith("Nauchnye chtenii")
        university = "Moskovskiĭ gosudarstvennyĭ universitet im. M.V. Lomonosova."
        faculty = f"{university} Istoricheskiĭ fakul\u02b9tet"
        assert Contributor(faculty, "contributor") in bib.contributors  # 710 $a $b

    def test_rda_264_and_a_relator_term(self, loc: dict[str, pymarc.Record]) -> None:
        bib = map_record(loc["(DLC)00004646"])
        assert bib.title == "Rollo in Scotland"
        assert bib.publisher == "W.B. Conkey Company, publishers"  # 264 _1, not 264 _4
        assert bib.publication_year == 1900
        assert Contributor("W.B. Conkey Company", "publisher") in bib.contributors

    def test_cancelled_isbns_are_kept_apart(self, loc: dict[str, pymarc.Record]) -> None:
        bib = map_record(loc["(DLC)00011437"])
        assert bib.title == "Cinderella"
        assert bib.subtitle == "Cenicienta"  # parallel title after " ="
        assert bib.isbns == ("9780811830843",)
        assert bib.invalid_isbns == ("031133090X (pbk.)",)

    def test_marc8_record(self, marc_dir: Path) -> None:
        [result] = iter_marc(marc_dir / "marc8.dat")
        assert result.record is not None
        bib = map_record(result.record)
        assert bib.title == "Escape from loneliness"
        assert bib.contributors == (Contributor("Tournier, Paul", "author"),)
        assert bib.publisher == "Westminster Press"
        assert bib.publication_year == 1962
        # LCSH (650 _0) and MeSH (650 _2), the repeated "Loneliness." once
        assert bib.subjects == ("Loneliness", "Self", "Social psychology", "Social Isolation")
        assert bib.control_number == "2"

    def test_text_is_returned_in_nfc(self, marc_dir: Path) -> None:
        [result] = iter_marc(marc_dir / "diacritic.dat")
        assert result.record is not None
        result.record["245"].subfields[0] = pymarc.Subfield("a", "Wirte\u0301n :")
        assert map_record(result.record).title == "Wirtén"

    def test_marcxml_records(self, marc_dir: Path) -> None:
        music, website = (
            map_record(r.record) for r in iter_marc(marc_dir / "batch.xml") if r.record
        )
        assert music.title == "The Great Ray Charles"
        assert music.material_type == "music"
        assert music.contributors == (Contributor("Charles, Ray", "performer"),)  # $4 prf
        assert music.publication_year == 1957  # "[1957?]"
        assert website.material_type == "computer_file"
        assert website.publication_year == 1994  # "1994-"

    def test_a_record_without_a_title_gets_one_and_a_warning(self) -> None:
        bib = map_record(make_record("00000nam a2200000 a 4500", control("001", "x1")))
        assert bib.title == UNTITLED
        assert bib.warnings == ("no title in 245 $a; [untitled] used",)
        assert bib.control_number == "x1"

    def test_an_empty_record_maps_to_nothing(self) -> None:
        bib = map_record(pymarc.Record())
        assert bib == BibData(title=UNTITLED, warnings=bib.warnings)

    def test_part_number_and_name_belong_to_the_title(self) -> None:
        record = make_record(
            "00000nam a2200000 a 4500",
            datafield("245", "00", a="Collected works.", n="Volume 3,", p="Poems /", c="X."),
        )
        assert map_record(record).title == "Collected works. Volume 3. Poems"

    @pytest.mark.parametrize(
        ("fixed", "field_041", "expected"),
        [
            ("ger", None, "ger"),
            ("FRE", None, "fre"),
            ("|||", "engund", "eng"),
            ("   ", None, None),
            ("|||", None, None),
            ("12 ", None, None),
        ],
    )
    def test_language(self, fixed: str, field_041: str | None, expected: str | None) -> None:
        fields = [control("008", "000107s2000    xx            000 0 " + fixed + " d")]
        if field_041:
            fields.append(datafield("041", "1 ", a=field_041))
        assert map_record(make_record("00000nam a2200000 a 4500", *fields)).language == expected

    def test_the_year_falls_back_to_008(self) -> None:
        record = make_record(
            "00000nam a2200000 a 4500",
            control("008", "000107s1987    xx            000 0 eng d"),
            datafield("260", a="Paris :", b="Gallimard,", c="[s.d.]"),
        )
        assert map_record(record).publication_year == 1987
        assert map_record(record).publisher == "Gallimard"

    @pytest.mark.parametrize(
        ("subfields", "roles"),
        [
            ({"e": "ed. and tr."}, ["editor", "translator"]),
            ({"e": "joint author."}, ["author"]),
            ({"e": "Former owner."}, ["former owner"]),
            ({"4": "trl"}, ["translator"]),
            ({"4": "http://id.loc.gov/vocabulary/relators/nrt"}, ["narrator"]),
            ({"e": "editor,", "4": "edt"}, ["editor"]),
            ({}, ["contributor"]),
        ],
    )
    def test_roles(self, subfields: dict[str, str], roles: list[str]) -> None:
        record = make_record(
            "00000nam a2200000 a 4500", datafield("700", "1 ", a="Doe, Jane,", **subfields)
        )
        assert [c.role for c in map_record(record).contributors] == roles
        assert {c.name for c in map_record(record).contributors} == {"Doe, Jane"}

    def test_clean_utf8_records_keep_their_own_bytes(self, marc_dir: Path) -> None:
        [result] = iter_marc(marc_dir / "diacritic.dat")
        assert result.raw is not None
        assert result.marc21() == (marc_dir / "diacritic.dat").read_bytes().rstrip(b"\x1a\n")

    def test_marc8_records_are_written_anew_in_utf8(self, marc_dir: Path) -> None:
        [result] = iter_marc(marc_dir / "marc8.dat")
        assert result.raw is None
        assert result.marc21()[9:10] == b"a"
        assert "à" in result.marc21().decode("utf-8")

    def test_fingerprint_ignores_case_accents_punctuation_and_roles(self) -> None:
        one = BibData(
            title="Le Petit Prince",
            contributors=(Contributor("Saint-Exupéry, Antoine de", "author"),),
            publication_year=1943,
            publisher="Reynal & Hitchcock",
        )
        other = dataclasses.replace(
            one,
            title="le petit prince.",
            contributors=(Contributor("Saint Exupery, Antoine de", "creator"),),
            isbns=("9780156013925",),
        )
        assert one.fingerprint() == other.fingerprint()
        assert len(one.fingerprint()) == 64
        assert dataclasses.replace(one, publication_year=1944).fingerprint() != one.fingerprint()
        assert dataclasses.replace(one, edition="2nd ed.").fingerprint() != one.fingerprint()

    @pytest.mark.parametrize("year", [1943, None])
    def test_the_fingerprint_is_the_hash_of_its_key_in_json(self, year: int | None) -> None:
        # Fingerprints are stored: the way they are computed must never change.
        bib = BibData(
            title="Le Petit Prince",
            contributors=(Contributor("Saint-Exupéry, Antoine de", "author"),
                          Contributor("Ægir  Ødegård", "translator")),
            publication_year=year,
            publisher="Reynal & Hitchcock",
        )  # fmt: skip
        key = {
            "title": "le petit prince", "subtitle": "", "year": year,
            # Æ and Ø have no decomposition: they are only case folded.
            "contributors": ["saint exupery antoine de", "ægir ødegard"],  # sorted
            "publisher": "reynal hitchcock", "edition": "",
        }  # fmt: skip
        payload = json.dumps(key, sort_keys=True, ensure_ascii=False).encode()
        assert bib.fingerprint() == hashlib.sha256(payload).hexdigest()


class TestMaterialType:
    @pytest.mark.parametrize(
        ("leader_06_07", "expected"),
        [
            ("am", "book"),
            ("aa", "book"),
            ("as", "serial"),
            ("ai", "serial"),
            ("cm", "score"),
            ("em", "map"),
            ("gm", "video"),
            ("im", "audiobook"),
            ("jm", "music"),
            ("km", "image"),
            ("mm", "computer_file"),
            ("om", "kit"),
            ("pc", "mixed"),
            ("rm", "object"),
            ("tm", "manuscript"),
            ("zm", None),
        ],
    )
    def test_leader_codes(self, leader_06_07: str, expected: str | None) -> None:
        assert material_type(f"00000n{leader_06_07} a2200000 a 4500") == expected


class TestStripIsbd:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("Escape from loneliness /", "Escape from loneliness"),
            ("Amateur media :", "Amateur media"),
            ("Action in teacher education ;", "Action in teacher education"),
            ("Cinderella =", "Cinderella"),
            ("Thaxter, Celia,", "Thaxter, Celia"),
            ("The poems of Celia Thaxter.", "The poems of Celia Thaxter"),
            ("Wise, Arthur E.", "Wise, Arthur E."),
            ("Washington, D.C.", "Washington, D.C."),
            ("Davis, Sammy, Jr.", "Davis, Sammy, Jr."),
            ("2nd ed.", "2nd ed."),
            ("Houghton Mifflin Co.,", "Houghton Mifflin Co."),
            ("Who is there? /", "Who is there?"),
            ("Dots... :", "Dots..."),
            ("Oddly punctuated :.", "Oddly punctuated"),
            (" / ", ""),
        ],
    )
    def test_examples(self, text: str, expected: str) -> None:
        assert strip_isbd(text) == expected
        assert strip_isbd(expected) == expected


class TestControlNumber:
    def test_format_and_split(self) -> None:
        assert format_control_number("   2016012345 ", "DLC") == "(DLC)2016012345"
        assert format_control_number("ocm123", None) == "ocm123"
        assert format_control_number("  ", "DLC") is None
        assert split_control_number("(DLC)2016012345") == ("2016012345", "DLC")
        assert split_control_number("ocm123") == ("ocm123", None)
        assert split_control_number("()42") == ("()42", None)


class TestMapHoldings:
    def test_koha_952_and_marc_852(self) -> None:
        record = make_record(
            "00000nam a2200000 a 4500",
            datafield(
                "952",
                a="MAIN",
                b="MAIN",
                o="823.914 ISH",
                p="31234000123456",
                y="BK",
                v="EUR 12,50",
            ),
            datafield("952", a="WEST", p="31234000999999", g="$1,234.00 (replacement)"),
            datafield("852", "0 ", b="EAST", h="PZ7.H231325", i="Si 2001", p="E-0001"),
            datafield("852", "  ", x="a note about nothing"),
        )
        assert map_holdings(record) == (
            HoldingData("31234000123456", "MAIN", "823.914 ISH", "BK", Decimal("12.50")),
            HoldingData("31234000999999", "WEST", None, None, Decimal("1234.00")),
            HoldingData("E-0001", "EAST", "PZ7.H231325 Si 2001", None, None),
        )

    def test_a_record_without_holdings(self, marc_dir: Path) -> None:
        [result] = iter_marc(marc_dir / "marc8.dat")
        assert result.record is not None
        assert map_holdings(result.record) == ()


class TestParsePrice:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("12.50", "12.50"),
            ("EUR 12,50", "12.50"),
            ("1.234,5", "1234.50"),
            ("$1,234.00 (pbk.)", "1234.00"),
            ("1,234", "1234.00"),
            ("CHF 1'250.-", "1250.00"),
            ("7", "7.00"),
            ("19.999", "20.00"),
            ("free", None),
            ("123456789012", None),
        ],
    )
    def test_examples(self, text: str, expected: str | None) -> None:
        assert parse_price(text) == (None if expected is None else Decimal(expected))


class TestRecordFromSource:
    def test_the_stored_source_writes_back_the_same_bytes(
        self, marc_dir: Path, loc_head: list[ReadResult]
    ) -> None:
        originals = (marc_dir / LOC_SAMPLE).read_bytes().split(b"\x1d")[:200]
        records = [r.record for r in loc_head[:200] if r.record is not None]
        rebuilt = [record_from_source(record.as_dict()) for record in records]
        data = to_marc21(rebuilt)
        assert data == b"".join(o + b"\x1d" for o in originals)
        for original, again in zip(records, read(data), strict=True):
            assert again.record is not None
            assert str(again.record.leader) == str(original.leader)
            assert fields_of(again.record) == fields_of(original)

    @pytest.mark.parametrize(
        ("source", "message"),
        [
            ({"fields": []}, "leader"),
            ({"leader": "x" * 24, "fields": {}}, "'fields' must be a list"),
            ({"leader": "x" * 24, "fields": [{"001": "a", "003": "b"}]}, "one tag"),
            ({"leader": "x" * 24, "fields": [{"245": {"ind1": "1"}}]}, "subfields"),
            ({"leader": "x" * 24, "fields": [{"245": {"subfields": [{"a": 1}]}}]}, "code to text"),
        ],
    )
    def test_a_malformed_source_is_refused(self, source: dict[str, object], message: str) -> None:
        with pytest.raises(MarcSourceError, match=message):
            record_from_source(source)


class TestRecordFromBib:
    bib = BibData(
        title="The left hand of darkness",
        subtitle="a novel",
        contributors=(
            Contributor("Le Guin, Ursula K.", "author"),
            Contributor("Ace Books", "publisher"),
            Contributor("Miéville, China", "author of introduction"),
        ),
        isbns=("9780441478125",),
        publisher="Ace Books",
        publication_year=1969,
        edition="1st ed.",
        language="eng",
        subjects=("Science fiction", "Gender"),
        series=("Hainish cycle",),
        description="First paragraph.\n\nSecond paragraph.",
        material_type="book",
        control_number="(SHELFMARK)b42",
    )

    def test_the_record_maps_back_to_the_same_fields(self) -> None:
        record = only_record(to_marc21([record_from_bib(self.bib, entered=date(2024, 5, 1))]))
        again = map_record(record)
        for name in BIB_COLUMNS:
            assert getattr(again, name) == getattr(self.bib, name), name
        assert again.fingerprint() == self.bib.fingerprint()

    def test_the_record_is_valid_marc21(self) -> None:
        record = record_from_bib(self.bib, entered=date(2024, 5, 1))
        data = to_marc21([record])
        assert data[5:10] == b"nam a"
        assert data[17:24] == b"7c 4500"
        assert int(data[:5]) == len(data)
        assert record["008"].data == "240501s1969    xx " + "|" * 17 + "eng d"
        assert len(record["008"].data) == 40
        assert [f.tag for f in record.fields] == [
            "001", "003", "008", "020", "100", "245", "250", "264", "490", "520", "520",
            "650", "650", "700", "700",
        ]  # fmt: skip
        assert record["245"].indicators == pymarc.Indicators("1", "0")
        assert record["700"].get_subfields("a", "e") == ["Ace Books", "publisher"]

    def test_a_bare_bib(self) -> None:
        bare = BibData(title="Untitled\x1fnotes", material_type="object")
        record = only_record(to_marc21([record_from_bib(bare, entered=date(2024, 5, 1))]))
        assert record.leader[6:8] == "rm"
        assert record["008"].data[6:15] == "nuuuuuuuu"
        assert record["008"].data[35:38] == "|||"
        again = map_record(record)
        assert again.title == "Untitled notes"
        assert (again.language, again.publication_year, again.control_number) == (None, None, None)

    def test_an_unknown_material_type_is_refused(self) -> None:
        with pytest.raises(MarcWriteError, match="unknown material type"):
            record_from_bib(BibData(title="x", material_type="ebook"), entered=date(2024, 5, 1))

    def test_mapped_sample_records_survive_the_round_trip(self, loc_head: list[ReadResult]) -> None:
        for result in loc_head[:200]:
            assert result.record is not None
            bib = map_record(result.record)
            record = record_from_bib(bib, entered=date(2024, 5, 1))
            again = map_record(only_record(to_marc21([record])))
            assert [getattr(again, n) for n in BIB_COLUMNS] == [
                getattr(bib, n) for n in BIB_COLUMNS
            ], result.control_number


class TestWriters:
    def test_marcxml_round_trip(self, marc_dir: Path) -> None:
        records = [r.record for r in iter_marc(marc_dir / "marc.dat") if r.record is not None]
        xml = to_marcxml(records)
        assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?><collection')
        again = [r.record for r in read(xml)]
        assert [r.as_dict() if r else None for r in again] == [r.as_dict() for r in records]

    def test_a_record_longer_than_marc21_allows_is_refused(self) -> None:
        record = make_record(
            "00000nam a2200000 a 4500",
            control("001", "long"),
            *[datafield("500", a="x" * 9_000) for _ in range(12)],
        )
        with pytest.raises(MarcWriteError, match="record long is"):
            to_marc21([record])


class TestDemoFile:
    def test_the_demo_catalogue_is_varied_and_clean(self) -> None:
        demo = resources.files("shelfmark.demo").joinpath("loc-demo.mrc")
        data = demo.read_bytes()
        assert len(data) < 1_000_000
        results = read(data)
        assert 350 <= len(results) <= 450
        assert all(r.record is not None and not r.warnings for r in results)
        bibs = [map_record(r.record) for r in results if r.record is not None]
        languages = Counter(b.language for b in bibs)
        assert languages.most_common(1)[0][0] == "eng"
        assert {"ger", "fre", "spa", "rus", "chi", "jpn"} <= set(languages)
        assert sum(bool(b.isbns) for b in bibs) > len(bibs) * 0.7
        assert sum(bool(b.description) for b in bibs) >= 20
        assert sum(bool(b.subjects) for b in bibs) > len(bibs) * 0.8
        assert len({b.control_number for b in bibs}) == len(bibs)


# --- robustness -------------------------------------------------------------------------

SPECIAL_BYTES = st.sampled_from(b"\x1d\x1e\x1f\x1b\x00 0123456789a\x80\xc3\xe1\xef\xff")
A_BYTE = st.one_of(SPECIAL_BYTES, st.integers(0, 255))
MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), A_BYTE),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 40)),
)


def mutate(data: bytes, mutations: list[tuple[str, int, object]]) -> bytes:
    buffer = bytearray(data)
    for kind, where, what in mutations:
        position = where % (len(buffer) + 1)
        if kind == "flip" and buffer:
            assert isinstance(what, int)
            buffer[min(position, len(buffer) - 1)] = what
        elif kind == "insert":
            assert isinstance(what, bytes)
            buffer[position:position] = what
        elif kind == "delete":
            assert isinstance(what, int)
            del buffer[position : position + what]
    return bytes(buffer)


@pytest.fixture(scope="module")
def seeds(marc_dir: Path) -> list[bytes]:
    two_records = b"".join(
        r + b"\x1d" for r in (marc_dir / "marc.dat").read_bytes().split(b"\x1d")[:2]
    )
    return [
        two_records,
        (marc_dir / "marc8.dat").read_bytes(),
        (marc_dir / "diacritic.dat").read_bytes(),
        (marc_dir / "batch.xml").read_bytes(),
    ]


@settings(max_examples=300, deadline=None, database=None)
@given(seed=st.integers(0, 3), mutations=st.lists(MUTATION, min_size=1, max_size=6))
def test_damaged_files_never_break_reading_or_mapping(
    seeds: list[bytes], seed: int, mutations: list[tuple[str, int, object]]
) -> None:
    data = mutate(seeds[seed], mutations)
    try:
        results = read(data)
    except MarcFileError:
        return
    assert [r.index for r in results] == list(range(1, len(results) + 1))
    for result in results:
        assert (result.record is None) == (result.error is not None)
        if result.record is not None:
            bib = map_record(result.record)
            map_holdings(result.record)
            assert bib.title
            assert len(bib.fingerprint()) == 64
            rewritten = read(to_marc21([record_from_source(result.record.as_dict())]))
            assert [r.error for r in rewritten] == [None]
    parts = read(data, tags=MAPPED_TAGS)
    assert [as_imported(r) for r in parts] == [as_imported(r) for r in results]
    for part, whole in zip(parts, results, strict=True):
        assert_read_as_pymarc_reads(part, whole)
