"""Story ids: hand-made variants of one text are one story; different texts are different stories."""

from __future__ import annotations

from workers.pipeline.stories import author_key, content_words, story_id

BASE = "$XYZ is collapsing, accounting fraud everywhere, sell everything before it goes to zero"


def test_copies_and_near_copies_of_a_text_are_one_story() -> None:
    variants = [
        BASE,
        "RT @bot_one: " + BASE,  # retweet prefix
        BASE + " #sell #xyz $XYZ",  # trailing hashtags and cashtags
        BASE.replace("$XYZ", "$ABCD"),  # swapped ticker
        BASE + " qz81k",  # random suffix with a digit
        BASE + " zzkqw",  # random suffix of letters: the text is long, its first words decide
        BASE.upper(),
        BASE + " https://t.co/abc123",  # a link
        BASE.replace(",", " ,").replace("  ", " "),  # spacing and punctuation
        "&amp; " + BASE,  # an HTML entity
    ]
    assert len({story_id(v) for v in variants}) == 1


def test_different_texts_are_different_stories() -> None:
    others = [
        "$XYZ beats estimates, raises guidance for the year, shares jump after the bell",
        "Fed holds rates steady and signals two cuts later this year",
        "$XYZ is collapsing",  # short texts are their whole content
        "$XYZ is recovering",
        "Oil prices fall as OPEC+ agrees to raise output from next month onwards",
    ]
    assert len({story_id(t) for t in [BASE, *others]}) == len(others) + 1


def test_the_same_short_text_with_numbers_changed_is_one_story() -> None:
    assert story_id("$AAPL up 3% premarket") == story_id("$MSFT up 5.2% premarket")
    assert content_words("RT @x: $AAPL up 3% premarket") == ["up", "premarket"]


def test_author_keys_are_per_source_and_ignore_case() -> None:
    assert author_key("TraderJoe", "twitter") == author_key("traderjoe", "twitter")
    assert author_key("traderjoe", "twitter") != author_key("traderjoe", "reddit")
    assert author_key(None, "reuters") is None and author_key("", "reuters") is None


def test_stopping_early_reads_the_same_words_as_the_whole_text() -> None:
    # story_id scans the first FIRST_CHUNK characters (cut at a space) and goes on only when they hold
    # too few words; the words it gets must be the first words of a scan of the whole text.
    texts = [
        BASE,
        "RT @a: " + BASE,  # "rt" is dropped, so one more word is needed
        "rt rt " + BASE,
        "a " * 40 + BASE,  # one-letter tokens: no words in the first chunk
        "x" * 70 + " " + BASE,  # no space in the first chunk
        "Shares of $XYZ2024 fell 3% in q3 after www.example.com/report9 said margins dropped sharply again",
        "word " * 12 + "tail12 " + "more words here",  # the cut falls inside a run of words
        "Wall  Street\tcloses\nlower as   bond yields climb for a third straight session on inflation fears",
    ]
    for text in texts:
        early = content_words(text, 8)
        whole = content_words(text)
        assert early == whole[: len(early)] and len(early) >= min(8, len(whole)), text
