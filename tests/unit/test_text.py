import html
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from models.text import extract_tickers, normalize_text


def test_cashtags_are_found_in_order_without_duplicates() -> None:
    assert extract_tickers("$AAPL beats, $msft flat, $AAPL again") == ["AAPL", "MSFT"]


def test_share_class_cashtags_keep_their_suffix() -> None:
    assert extract_tickers("Buffett adds to $BRK.B and $BF.A") == ["BRK.B", "BF.A"]


def test_prices_and_amounts_are_not_tickers() -> None:
    assert extract_tickers("Shares at $5, a $1.2bn deal, US$30 and $12.50 target") == []


def test_cashtag_at_end_of_sentence() -> None:
    assert extract_tickers("Watch $TSLA.") == ["TSLA"]


def test_html_entities_are_unescaped_and_links_removed() -> None:
    assert normalize_text("S&amp;P 500  rallies https://t.co/abc123 \n today") == "S&P 500 rallies today"


def test_an_entity_that_unescapes_to_a_cashtag_is_a_ticker() -> None:
    assert extract_tickers("&#36;NVDA beats") == ["NVDA"]
    assert extract_tickers("no cashtag here") == []


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=80)
       | st.lists(st.sampled_from(["http://x.y/z", "WWW.a.b", " ", "\u00a0", "\u2028", "\x1c", "&amp;", "a", "\n"]))
       .map("".join))
def test_normalisation_collapses_whitespace_as_the_regex_did(raw: str) -> None:
    """normalize_text joins str.split(); the model was trained with a whitespace regex and strip()."""
    from models.text import _URL, pictographs_as_words

    assert normalize_text(raw) == re.sub(r"\s+", " ", pictographs_as_words(_URL.sub(" ", html.unescape(raw)))).strip()


def test_emoji_are_written_as_words_with_market_meanings() -> None:
    assert normalize_text("$TSLA 🚀🚀 to the moon 🌙") == "$TSLA rocket rocket to the moon moon"
    assert normalize_text("bulls 🐂 vs bears 🐻, 📈 then 📉") == "bulls bull vs bears bear , chart up then chart down"
    assert normalize_text("diamond hands 💎🙌🏽 ⬆️") == "diamond hands diamond raised hands up arrow"  # tone, VS16 gone


def test_a_long_run_of_one_emoji_counts_as_three_and_other_symbols_use_their_names() -> None:
    assert normalize_text("$GME " + "🚀" * 12) == "$GME rocket rocket rocket"
    assert normalize_text("game on 🎮") == "game on video game"
    assert normalize_text("5 → 6, 20°C, €3 ™") == "5 → 6, 20°C, €3 ™"  # maths, units, currencies stay


def test_cashtags_numbers_and_ascii_text_are_untouched() -> None:
    text = "$AAPL +3.2% to $191.50, EPS $1.52 vs $1.43 est."
    assert normalize_text(text) == text


def test_the_scan_for_dropped_characters_finds_exactly_the_dropped_characters() -> None:
    """pictographs_as_words translates only a text the scan finds one in: the two must agree on every
    code point, or a variation selector would survive into the model's input."""
    from models.text import _DROP, _DROPPED

    found = {code for code in range(0x110000) if _DROPPED.match(chr(code))}
    assert found == set(_DROP)
