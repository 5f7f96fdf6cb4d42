import pytest

from schemas.messages import _readable


def test_a_text_is_readable_exactly_when_a_character_of_it_is_alphanumeric() -> None:
    """The check is a regex scan; it must accept and refuse what `str.isalnum` would, on every code point."""
    differ = []
    for code in range(0x110000):
        char = chr(code)
        try:
            accepted = _readable(f"\u200b{char}.") == f"\u200b{char}."
        except ValueError:
            accepted = False
        if accepted != char.isalnum():
            differ.append(hex(code))
    assert differ == []


def test_punctuation_and_zero_width_characters_alone_are_refused() -> None:
    with pytest.raises(ValueError, match="has no letter or digit"):
        _readable("\u200b ... !!! \u2063")
    with pytest.raises(ValueError, match="has no letter or digit"):
        _readable("___")  # the regex engine's word characters include the underscore; isalnum does not
    assert _readable("_a") == "_a"
