"""Masking of e-mail addresses and phone numbers, without touching the numbers finance is made of."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.pipeline.privacy import mask_pii


@pytest.mark.parametrize("raw, masked", [
    ("DM me at jane.doe+tips@example.co.uk for $TSLA calls", "DM me at [email] for $TSLA calls"),
    ("Call +1 (555) 123-4567 or 555-123-4567 today", "Call [phone] or [phone] today"),
    ("UK desk: +44 20 7946 0958.", "UK desk: [phone]."),
    ("Berlin 0049 30 1234567", "Berlin [phone]"),
])
def test_personal_data_is_masked(raw: str, masked: str) -> None:
    assert mask_pii(raw) == masked


@pytest.mark.parametrize("raw", [
    "Revenue $1.2bn, up 15% to 1,234,567 units",
    "On 2024-01-15 volume was 150000000 shares",
    "EPS 3.45 vs 3.40 est; PT 250.00; results 10/24/2024",
    "volume 12 345 678 today",
    "ISIN US0378331005, CUSIP 037833100",
    "$AAPL @tim_cook says hi",
])
def test_financial_text_is_left_alone(raw: str) -> None:
    assert mask_pii(raw) == raw


pii_like = st.text(alphabet=st.sampled_from(list("0123456789 ()+-./,@$€%abcXYZ_\n")), max_size=60)


@settings(max_examples=500, deadline=None)
@given(pii_like)
def test_the_quick_checks_change_no_result(raw: str) -> None:
    """mask_pii skips a regex when the text cannot match it ("@" for e-mail addresses, a run of digits
    for phone numbers); the result is the regexes' own."""
    from workers.pipeline.privacy import _PHONE_CANDIDATE, EMAIL, _phone

    assert mask_pii(raw) == _PHONE_CANDIDATE.sub(_phone, EMAIL.sub("[email]", raw))
