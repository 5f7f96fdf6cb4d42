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
