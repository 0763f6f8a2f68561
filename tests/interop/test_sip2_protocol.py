"""The SIP2 wire format: checksums (with the spec's own examples), parsing, formatting,
dates and line framing. No database, no sockets."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shelfmark.interop.sip2.answers import NEGATIVE, negative
from shelfmark.interop.sip2.protocol import (
    RESPONSE_LAYOUT,
    BadChecksum,
    MalformedMessage,
    Reply,
    UnknownMessage,
    checksum,
    count,
    encode,
    format_datetime,
    format_reply,
    parse,
    parse_datetime,
)
from shelfmark.interop.sip2.server import OVERLONG, Framer

# Messages printed in the 3M SIP2 specification and its developers' guide, with their AZ.
SPEC_EXAMPLES = [
    "990 402.00AY1AZFCB4",
    "941AY3AZFDFA",
    "2519980723    094240AOCertification Institute ID|AAPatronID|AY4AZEBF1",
    "1719980723    100000AOCertification Institute ID|ABItemBook|AY1AZEBEB",
    "3519980723    094014AOCertification Institute ID|AAPatronID|AY3AZEBF2",
    "01N19960213    162352AO|ALCARD BLOCK TEST|AA104000000705|AC|AY2AZF02F",
    "6300119980723    091905Y         AOInstitutionID|AAPatronID|BP00001|BQ00005|AY1AZEA83",
    "1808000119980723    115615CF00000|ABItemBook|AJTitle For Item Book|CK003|AQPermanent "
    "Location for ItemBook, Language 1|APCurrent Location ItemBook|CHFree-form text with new "
    "item property|AY0AZC05B",
]


class TestChecksum:
    @pytest.mark.parametrize("example", SPEC_EXAMPLES)
    def test_the_spec_examples(self, example: str) -> None:
        data = example.encode("ascii")
        assert checksum(data[:-4]) == example[-4:]

    def test_is_four_upper_case_hex_digits_of_the_negated_byte_sum(self) -> None:
        assert checksum(b"") == "0000"
        assert checksum(b"\x01") == "FFFF"
        assert checksum(b"\xff" * 300) == format(-(255 * 300) & 0xFFFF, "04X")

    def test_counts_bytes_not_characters(self) -> None:
        # "é" is two bytes in UTF-8: both count, as the SC sums what it sends.
        assert checksum("é".encode()) == format(-(0xC3 + 0xA9) & 0xFFFF, "04X")


class TestParse:
    def test_fixed_and_variable_fields_with_error_detection(self) -> None:
        message = parse(SPEC_EXAMPLES[6].encode())
        assert message.command == "63"
        assert message.fixed == ("001", "19980723    091905", "Y         ")
        assert message.get("AO") == "InstitutionID"
        assert message.get("BQ") == "00005"
        assert (message.sequence, message.checksummed) == ("1", True)

    def test_without_error_detection(self) -> None:
        message = parse(b"9300CNkiosk|COsecret|CPMAIN|")
        assert (message.sequence, message.checksummed) == (None, False)
        assert message.fixed == ("0", "0")
        assert message.get("CN") == "kiosk"

    def test_a_sequence_number_without_checksum(self) -> None:
        message = parse(b"9900302.00AY7")
        assert (message.sequence, message.checksummed) == ("7", False)
        assert message.fixed == ("0", "030", "2.00")

    def test_a_checksum_in_lower_case_hex_is_accepted(self) -> None:
        line = SPEC_EXAMPLES[2][:-4] + SPEC_EXAMPLES[2][-4:].lower()
        assert parse(line.encode()).get("AA") == "PatronID"

    def test_a_wrong_checksum_is_refused_with_what_was_read(self) -> None:
        damaged = SPEC_EXAMPLES[2].replace("PatronID", "PatronIE").encode()
        with pytest.raises(BadChecksum) as caught:
            parse(damaged)
        assert (caught.value.sequence, caught.value.checksummed) == ("4", True)

    def test_a_checksum_that_is_not_hex_is_a_bad_checksum(self) -> None:
        with pytest.raises(BadChecksum):
            parse(b"9900302.00AY1AZWXYZ")

    def test_request_acs_resend_with_a_checksum_only(self) -> None:
        message = parse(b"97AZFEF5")
        assert (message.command, message.sequence, message.checksummed) == ("97", None, True)

    def test_repeated_and_empty_fields_and_a_missing_last_delimiter(self) -> None:
        message = parse(b"1720260302    100000AOlib|AC|AB123|AFone|AFtwo")
        assert message.fields["AF"] == ("one", "two")
        assert message.get("AC") == ""
        assert message.get("AB") == "123"
        assert message.get("AD") is None

    def test_values_are_stripped_of_surrounding_blanks(self) -> None:
        assert parse(b"1720260302    100000AB 123 |").get("AB") == "123"

    def test_text_is_decoded_and_bad_bytes_replaced(self) -> None:
        message = parse("1720260302    100000AJCafé|".encode())
        assert message.get("AJ") == "Café"
        assert parse(b"1720260302    100000AJ\xff|").get("AJ") == "\ufffd"
        assert parse(b"1720260302    100000AJ\xe9|", encoding="latin-1").get("AJ") == "é"

    def test_a_flag_is_true_only_for_y(self) -> None:
        message = parse(b"11YN20260302    100000" + b" " * 18 + b"AOx|AAp|ABi|")
        assert message.flag(0)
        assert not message.flag(1)

    @pytest.mark.parametrize("line", [b"", b"9", b"XX123", b"98YYYY", b"\x00\x01garbage"])
    def test_what_no_sc_sends_is_unknown(self, line: bytes) -> None:
        with pytest.raises(UnknownMessage):
            parse(line)

    def test_a_short_fixed_part_is_malformed_and_keeps_its_command(self) -> None:
        with pytest.raises(MalformedMessage) as caught:
            parse(b"11YN2026AY3AZ" + checksum(b"11YN2026AY3AZ").encode())
        assert (caught.value.command, caught.value.sequence) == ("11", "3")

    @pytest.mark.parametrize("variable", [b"A|", b"A\xffx|", b"AOx|*Bbad|"])
    def test_a_field_without_a_proper_id_is_malformed(self, variable: bytes) -> None:
        with pytest.raises(MalformedMessage):
            parse(b"1720260302    100000" + variable)


class TestFormat:
    def test_fixed_fields_then_variable_fields_in_order(self) -> None:
        reply = Reply("36", ("Y", "20260302   Z100000"), (("AO", "lib"), ("AA", "21")))
        assert format_reply(reply) == "36Y20260302   Z100000AOlib|AA21|"

    def test_a_field_without_value_is_left_out_but_an_empty_one_is_sent(self) -> None:
        reply = Reply("20", ("0", "20260302   Z100000"), (("AB", ""), ("AJ", None)))
        assert format_reply(reply) == "20020260302   Z100000AB|"

    def test_a_value_cannot_break_the_message(self) -> None:
        reply = Reply("94", ("1",), (("AF", "a|b\rc\nd"),))
        assert format_reply(reply) == "941AFa/b c d|"

    def test_a_fixed_field_of_the_wrong_width_is_a_bug(self) -> None:
        with pytest.raises(ValueError, match="fixed widths"):
            format_reply(Reply("94", ("10",)))

    def test_the_answer_carries_the_request_sequence_and_a_checksum(self) -> None:
        data = encode(Reply("94", ("1",)), sequence="3", checksummed=True)
        assert data == b"941AY3AZFDFA\r"  # the spec's example

    def test_without_error_detection_only_the_terminator(self) -> None:
        assert encode(Reply("94", ("0",)), sequence=None, checksummed=False) == b"940\r"

    def test_counts_are_four_digits(self) -> None:
        assert (count(0), count(12), count(123_456), count(-1)) == ("0000", "0012", "9999", "0000")

    @pytest.mark.parametrize("command", sorted(NEGATIVE))
    def test_every_negative_answer_fits_its_layout(self, command: str) -> None:
        reply = negative(command, "no", message=None, now=datetime.now(UTC), institution="lib")
        assert reply is not None
        assert reply.command in RESPONSE_LAYOUT
        format_reply(reply)  # raises if a fixed field has the wrong width


class TestDates:
    def test_utc_with_the_zone_as_z(self) -> None:
        at = datetime(2026, 3, 2, 10, 5, 9, tzinfo=UTC)
        assert format_datetime(at) == "20260302   Z100509"
        assert len(format_datetime(at)) == 18
        assert parse_datetime("20260302   Z100509") == at

    def test_a_blank_zone_is_local_time(self) -> None:
        local = datetime(2026, 3, 2, 10, 5, 9).astimezone()
        assert parse_datetime("20260302    100509") == local.astimezone(UTC)

    @pytest.mark.parametrize(
        "text", ["", " " * 18, "2026030    100509", "20261302    100509", "20260302 EST100509"]
    )
    def test_what_is_not_a_date(self, text: str) -> None:
        assert parse_datetime(text) is None


class TestFramer:
    def lines(self, framer: Framer) -> list[bytes | object]:
        found: list[bytes | object] = []
        while (line := framer.pop()) is not None:
            found.append(line)
        return found

    def test_cr_crlf_and_lf_each_end_a_line_and_blank_lines_are_skipped(self) -> None:
        framer = Framer(100)
        framer.feed(b"one\rtwo\r\nthree\n\r\n\rfour")
        assert self.lines(framer) == [b"one", b"two", b"three"]
        framer.feed(b"\r")
        assert self.lines(framer) == [b"four"]

    def test_a_line_split_across_reads(self) -> None:
        framer = Framer(100)
        for part in (b"99", b"00302", b".00\r"):
            framer.feed(part)
        assert self.lines(framer) == [b"9900302.00"]

    def test_a_line_over_the_limit_is_dropped_unkept(self) -> None:
        framer = Framer(10)
        framer.feed(b"x" * 25)
        assert self.lines(framer) == []
        framer.feed(b"y" * 25)
        assert len(framer._buffer) <= 10 + 25
        framer.feed(b"z\rnext\r")
        assert self.lines(framer) == [OVERLONG, b"next"]

    def test_a_complete_line_over_the_limit_is_dropped_too(self) -> None:
        framer = Framer(4)
        framer.feed(b"12345\r1234\r")
        assert self.lines(framer) == [OVERLONG, b"1234"]
