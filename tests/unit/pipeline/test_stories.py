"""Story ids: hand-made variants of one text are one story; different texts are different stories."""

from __future__ import annotations

from config.settings import DEFAULT_MODEL_DIR
from models.classifier import ZeroCostClassifier
from models.dataset import TOPIC_DIR, read_labelled_csv
from workers.pipeline.stories import author_key, content_words, story_id, story_id_of_words

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


def test_the_worker_s_story_ids_are_those_of_the_texts_on_their_own() -> None:
    # The worker takes a text's words from its tokenizer's pass (the served model's, a batch at a time);
    # story_id tokenizes one text with the shipped tokenizer. Both must give every text the same story.
    texts = [ex.text for ex in read_labelled_csv(TOPIC_DIR / "train.csv", "topic")][:3000]
    texts += [
        BASE, "RT @a: " + BASE, "rt rt " + BASE, "a " * 40 + BASE, "x" * 70 + " " + BASE,
        "Wall  Street\tcloses\nlower as   bond yields climb for a third straight session on inflation fears",
        "$TSLA 🚀🚀🚀 to the moon, diamond hands 💎🙌 #TSLA", "Café owners' shares — up 5% [CLS] again",
        "&amp; &lt;b&gt;Profit&lt;/b&gt; warning at ACME&#39;s unit", "\u00a0spaces\u2003of\u3000other kinds",
    ]
    encoded = ZeroCostClassifier(DEFAULT_MODEL_DIR).encode(texts, story_id_of_words)
    assert encoded.from_words == [story_id(t) for t in texts]


def test_names_after_a_sign_are_not_story_words() -> None:
    assert content_words("RT @jim_cramer_2: $BRK.B and #sell_now_pls, says @x trader") == ["and", "says", "trader"]
    assert content_words("it's covid-19 q3 5.2bn A I'm") == ["it", "covid"]
    assert content_words("Café résumé 🚀") == ["cafe", "resume", "rocket"]
    assert content_words("RT @_tom_hanks: loves it") == ["loves", "it"]
