"""MARC21 in and out of Shelfmark, without the database: the one import for callers.

- reading: `iter_marc` (marc_read) streams binary MARC21 (UTF-8 or MARC-8) and MARCXML;
- mapping: `map_record`, `map_holdings` (marc_map) turn a record into bib and item fields;
- writing: `record_from_bib`, `record_from_source`, `to_marc21`, `to_marcxml` (marc_write).
"""

from shelfmark.interop.marc_map import (
    MATERIAL_TYPES,
    UNTITLED,
    BibData,
    Contributor,
    HoldingData,
    control_number,
    format_control_number,
    map_holdings,
    map_record,
    material_type,
    parse_price,
    split_control_number,
    strip_isbd,
)
from shelfmark.interop.marc_read import MarcFileError, ReadResult, iter_marc
from shelfmark.interop.marc_write import (
    LEADER_TYPES,
    BibFields,
    ContributorFields,
    MarcSourceError,
    MarcWriteError,
    record_from_bib,
    record_from_source,
    to_marc21,
    to_marcxml,
)

__all__ = [
    "LEADER_TYPES",
    "MATERIAL_TYPES",
    "UNTITLED",
    "BibData",
    "BibFields",
    "Contributor",
    "ContributorFields",
    "HoldingData",
    "MarcFileError",
    "MarcSourceError",
    "MarcWriteError",
    "ReadResult",
    "control_number",
    "format_control_number",
    "iter_marc",
    "map_holdings",
    "map_record",
    "material_type",
    "parse_price",
    "record_from_bib",
    "record_from_source",
    "split_control_number",
    "strip_isbd",
    "to_marc21",
    "to_marcxml",
]
