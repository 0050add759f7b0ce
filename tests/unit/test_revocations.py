"""The revocation feed's cursor as a caller sends it (``since``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authserver.errors import InvalidRequest
from authserver.services.revocations import (
    FEED_CURSOR_REFUSED,
    MAX_FEED_CURSOR,
    parse_feed_cursor,
)
from tests.hostile_input import junk_feed_cursors

PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None)


@pytest.mark.parametrize("text", ["0", "1", "42", "0042", str(MAX_FEED_CURSOR)])
def test_ascii_digits_within_the_bigint_range_are_a_cursor(text: str) -> None:
    assert parse_feed_cursor(text) == int(text)


def test_the_largest_bigint_is_the_largest_cursor() -> None:
    # The cursor is a revocations.id: a PostgreSQL bigint.
    assert MAX_FEED_CURSOR == 9_223_372_036_854_775_807


def test_one_past_the_largest_bigint_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        parse_feed_cursor(str(MAX_FEED_CURSOR + 1))


@pytest.mark.parametrize(
    "text",
    ["\u00b2", "\u0661", "\uff11", "1\u0661"],
    ids=["superscript two", "arabic-indic one", "fullwidth one", "mixed"],
)
def test_digits_that_are_not_ascii_are_refused(text: str) -> None:
    # str.isdigit() is True for all of them; int() reads some ("\u0661" as 1).
    assert text.isdigit()

    with pytest.raises(InvalidRequest):
        parse_feed_cursor(text)


@pytest.mark.parametrize("text", ["", "-1", "+1", " 1", "1 ", "1.0", "1e3", "0x1", "1_000"])
def test_anything_but_plain_digits_is_refused(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_feed_cursor(text)


def test_more_than_19_digits_is_refused_even_when_the_value_is_small() -> None:
    with pytest.raises(InvalidRequest):
        parse_feed_cursor("0" * 20)


def test_thousands_of_digits_are_refused_before_int_reads_them() -> None:
    # int() refuses more than 4300 digits with a ValueError of its own.
    with pytest.raises(InvalidRequest):
        parse_feed_cursor("9" * 5000)


@PROPERTY
@given(since=junk_feed_cursors)
def test_a_refusal_says_the_same_fixed_sentence_whatever_arrived(since: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_feed_cursor(since)

    assert refused.value.description == FEED_CURSOR_REFUSED


@PROPERTY
@given(cursor=st.integers(min_value=0, max_value=MAX_FEED_CURSOR))
def test_every_cursor_an_answer_can_hold_reads_back(cursor: int) -> None:
    assert parse_feed_cursor(str(cursor)) == cursor
