"""Generated and mutated Kafka records for the fuzz run, from a seed and a clock.

The same seed gives the same records but for their times, which are relative to the clock: a mutant
whose time lands near a limit (1980, or five minutes ahead) may change sides from one run to the next.

Three families, each record labelled with what it must become:
- good: a valid post or article built from real texts (tweets, news sentences) with odd but legal
  variations (scripts, emoji, zero-width and control characters, escapes, key order, optional fields, a
  key sent twice); it must be stored, once per key.
- bad: a valid record with one known defect (a missing or mistyped field, an unknown field, NUL, no
  letter or digit, over-long text or id, a naive, ancient or future time, broken JSON or UTF-8, a value
  that is no object, a message of the other kind, an empty record); it must be dead-lettered.
- mutated: byte-level havoc (flips, inserts of interesting bytes, deletes, repeats, truncation, splices)
  or JSON-level mutation (a node replaced by a hostile value) of a good record, a record of the hostile
  corpus or an earlier mutant; its fate is whatever the decoder decides, but it must be decided without a
  crash, and the same alone as in a batch.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tests.unit.pipeline.test_fuzz_decoder import corpus

DATA = Path(__file__).resolve().parents[2] / "data"
SOURCES = ["twitter", "stocktwits", "reddit/r/stocks", "Reuters", "Bloomberg", "dow-jones", "財經新聞", "новости",
           "x" * 128, "a"]
SCRIPTS = ["日本株が急落", "Акции упали", "مرحبا بالسوق", "שוק המניות", "शेयर बाजार", "주식 시장", "😱📉", "🚀🚀🚀",
           "\u200b", "\u200d", "\ufeff", "\u202e", "\u202c", "e\u0301", "\u00e9", "\x07", "\x1b[31m", "\t", "\\n",
           "\ud7ff", "\U0010fffd", "$AAPL", "$BRK.B", "$tsla", "+1 (555) 010-9999", "someone@example.com",
           "https://t.co/x", "<script>", "'; DROP TABLE x;--", "%s%n", "{{7*7}}"]
HOSTILE_VALUES: list[Any] = [None, True, 0, -1, 10 ** 30, 1.5e308, -0.0, "", " ", "\x00", "\u0000x", "\ud800",
                             "a" * 300, "z" * 20_001, [], {}, [[[[[]]]]], {"a": {"b": {"c": {}}}},
                             "2026-11-22T11:00:00", "1979-12-31T23:59:59Z", "9999-12-31T23:59:59Z", "2026-02-30T00:00:00Z", "now",
                             "\u202e", "\u200b" * 5, "😱" * 100]
INTERESTING_BYTES = [b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":", b"\x00", b"\xff", b"\xc3", b"\xe2\x80",
                     b"\xf0\x9f", b"\\u0000", b"\\ud800", b"\\", b"NaN", b"Infinity", b"-", b"1e999", b"null",
                     b"\xef\xbb\xbf", b"\r\n", b" " * 8, b"9" * 40]


@dataclass(frozen=True)
class Record:
    kind: str  # "social" or "news": the topic it goes to
    value: bytes | None
    family: str  # "good", "bad" or "mutated"
    defect: str = ""  # for "bad": which; for "good": "" or "repeat" (a key sent again)
    key: str = ""  # for "good": source:id as stored


def real_texts() -> tuple[list[str], list[str]]:
    """Tweets and news sentences from the shared training data."""
    tweets: list[str] = []
    for name in ("twitter_financial_news_sentiment", "twitter_financial_news_topic"):
        with open(DATA / name / "train.csv", newline="", encoding="utf-8") as handle:
            tweets += [row["text"] for row in csv.DictReader(handle) if row["text"].strip()]
    news = [item["content"] for item in json.loads((DATA / "finentity" / "FinEntity.json").read_text())]
    return tweets, news


class Generator:
    """Records from `seed`, judged against `now` (good records are at least an hour old, future ones at
    least a day ahead, so that a clock a few minutes later decides the same)."""

    def __init__(self, seed: int, now: datetime, tag: str) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.tag = tag  # in every good record's id, so that runs never share keys
        self.tweets, self.news = real_texts()
        self.hostile = [(value, kind) for name, value, kind in corpus("fuzz-corpus", now)
                        if value is None or len(value) < 1_000_000]
        self.pool: list[Record] = []  # earlier records, for mutation and repeats
        self.count = 0

    def records(self, n: int) -> Iterator[Record]:
        for _ in range(n):
            roll = self.rng.random()
            record = self.good() if roll < 0.4 else self.bad() if roll < 0.6 else self.mutated()
            if len(self.pool) < 2000:
                self.pool.append(record)
            else:
                self.pool[self.rng.randrange(2000)] = record
            yield record

    # -- good ---------------------------------------------------------------------------------------

    def _text(self, pool: list[str]) -> str:
        text = self.rng.choice(pool)
        for _ in range(self.rng.choice([0, 0, 1, 2, 4])):
            at = self.rng.randrange(len(text) + 1)
            text = text[:at] + self.rng.choice(SCRIPTS) + text[at:]
        return text

    def _time(self) -> str:
        moment = self.now - timedelta(seconds=self.rng.uniform(3600, 3 * 365 * 86400))
        offset = timezone(timedelta(minutes=self.rng.choice([0, 0, 60, -300, 330, 840, -660])))
        moment = moment.astimezone(offset)
        if self.rng.random() < 0.3:
            moment = moment.replace(microsecond=0)
        text = moment.isoformat()
        return text.replace("+00:00", "Z") if self.rng.random() < 0.5 else text

    def _message(self, kind: str) -> dict[str, Any]:
        self.count += 1
        ident = f"{self.tag}-{self.count}"
        if self.rng.random() < 0.2:
            ident += self.rng.choice(["-é", "-日本", "/a?b=c", " x", "-\u202e"])
        message: dict[str, Any] = {"id": ident, "source": self.rng.choice(SOURCES), "published_at": self._time()}
        if kind == "social":
            message["text"] = self._text(self.tweets)
        else:
            message["title"] = self._text(self.news + self.tweets)[:2000]
            if self.rng.random() < 0.6:
                message["body"] = " ".join(self.rng.choice(self.news) for _ in range(self.rng.randrange(1, 30)))
        for name, values in (("url", ["https://example.com/a", None, "not a url"]), ("author", ["@a", "Ann", None]),
                             ("language", ["en", "de", "zh-Hant"])):
            if self.rng.random() < 0.3:
                message[name] = self.rng.choice(values)
        return message

    def _dump(self, message: dict[str, Any]) -> bytes:
        items = list(message.items())
        self.rng.shuffle(items)
        separators = self.rng.choice([(",", ":"), (", ", ": "), (",\n", " :\t")])
        body = json.dumps(dict(items), ensure_ascii=self.rng.random() < 0.5, separators=separators)
        return (self.rng.choice(["", " ", "\n", "\t "]) + body + self.rng.choice(["", " ", "\r\n"])).encode()

    def good(self) -> Record:
        repeats = [r for r in self.pool[-200:] if r.family == "good"]
        if repeats and self.rng.random() < 0.05:  # the same key again (a replay): stored once
            earlier = self.rng.choice(repeats)
            return Record(earlier.kind, earlier.value, "good", "repeat", earlier.key)
        kind = self.rng.choice(["social", "news"])
        message = self._message(kind)
        key = f"{message['source'].strip()}:{message['id'].strip()}"
        return Record(kind, self._dump(message), "good", "", key)

    # -- bad ----------------------------------------------------------------------------------------

    def bad(self) -> Record:
        kind = self.rng.choice(["social", "news"])
        message = self._message(kind)
        text_field = "text" if kind == "social" else "title"
        name, defect = self.rng.choice(list(self._defects(text_field).items()))
        value = defect(message)
        return Record(kind, value, "bad", name)

    def _defects(self, text_field: str) -> dict[str, Callable[[dict[str, Any]], bytes | None]]:
        rng = self.rng

        def changed(**fields: Any) -> Callable[[dict[str, Any]], bytes]:
            return lambda m: self._dump({**m, **fields})

        def without(field: str) -> Callable[[dict[str, Any]], bytes]:
            return lambda m: self._dump({k: v for k, v in m.items() if k != field})

        future = (self.now + timedelta(days=rng.uniform(1, 3000))).isoformat()
        ancient = datetime(rng.randrange(1, 1980), rng.randrange(1, 13), 1, tzinfo=timezone.utc).isoformat()
        return {
            "missing id": without("id"),
            "missing source": without("source"),
            "missing published_at": without("published_at"),
            f"missing {text_field}": without(text_field),
            "id not a string": changed(id=rng.choice([1, 2.5, True, None, [], {}])),
            "source not a string": changed(source=rng.choice([7, False, ["a"], {"a": 1}])),
            f"{text_field} not a string": changed(**{text_field: rng.choice([3, None, ["t"], {"t": 1}])}),
            "published_at not a time": changed(published_at=rng.choice(["yesterday", "", "2026-13-01T00:00:00Z",
                                                                        12345, None, []])),
            "naive published_at": changed(published_at="2026-11-22T11:00:00"),
            "published_at before 1980": changed(published_at=ancient),
            "published_at in the future": changed(published_at=future),
            "unknown field": changed(**{rng.choice(["extra", "score", "Text", "ID"]): rng.choice([1, "x", None])}),
            "NUL in the text": lambda m: self._dump({**m, text_field: m[text_field] + "\x00"}),
            "NUL in the source": lambda m: self._dump({**m, "source": "a\x00b"}),
            "no letter or digit": changed(**{text_field: rng.choice(["...", "\u200b\u200d", "😱📉", "$ $", "?!"])}),
            "blank id": changed(id=rng.choice(["", "   ", "\t"])),
            "id too long": changed(id="i" * rng.randrange(257, 400)),
            "source too long": changed(source="s" * rng.randrange(129, 300)),
            "text too long": changed(**{text_field: "w " * (10_001 if text_field == "text" else 1001)}),
            "language too short": changed(language="e"),
            "truncated json": lambda m: self._truncated(self._dump(m)),
            "trailing garbage": lambda m: self._dump(m) + rng.choice([b"}", b",", b"x", b"{}"]),
            "single quotes": lambda m: self._dump(m).replace(b'"', b"'"),
            "broken utf-8": lambda m: self._dump(m).replace(b'"source"', b'"source\xff"', 1),
            "not an object": lambda m: rng.choice([b"null", b"[]", b"1", b'"text"', b"true", b"[{}]"]),
            "empty value": lambda m: rng.choice([b"", None]),
            "the other kind": lambda m: self._dump({
                **{k: v for k, v in m.items() if k not in ("text", "title", "body")},
                ("title" if text_field == "text" else "text"): "$AAPL falls"}),
        }

    def _truncated(self, value: bytes) -> bytes:
        """Cut before the closing brace (and whatever whitespace follows it)."""
        end = value.rstrip().rindex(b"}")
        return value[: self.rng.randrange(1, end)]

    # -- mutated ------------------------------------------------------------------------------------

    def mutated(self) -> Record:
        rng = self.rng
        if rng.random() < 0.3:  # a well-formed record whose text is any mix of code points
            kind = rng.choice(["social", "news"])
            message = self._message(kind)
            message["text" if kind == "social" else "title"] = self._random_text()
            return Record(kind, self._dump(message), "mutated")
        roll = rng.random()
        if roll < 0.3:
            value, kind = rng.choice(self.hostile)
        elif self.pool and roll < 0.7:
            seed = rng.choice(self.pool)
            value, kind = seed.value, seed.kind
        else:
            kind = rng.choice(["social", "news"])
            value = self._dump(self._message(kind))
        if value is not None and rng.random() < 0.5:
            value = self._json_mutation(value)
        else:
            value = self._havoc(value or b"")
        return Record(kind, value, "mutated")

    # Code point ranges a text may draw from: ASCII, Latin, combining marks, Greek and Cyrillic, Arabic and
    # Hebrew, Devanagari, CJK, Hangul, fullwidth forms, format and control characters, private use, emoji,
    # noncharacters and the last planes.
    RANGES = [(0x20, 0x7E), (0x00, 0x1F), (0x7F, 0x9F), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x4FF), (0x590, 0x6FF),
              (0x900, 0x97F), (0x2000, 0x206F), (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xE000, 0xF8FF),
              (0xFDD0, 0xFDEF), (0xFE00, 0xFE0F), (0xFF00, 0xFFEF), (0xFFF0, 0xFFFF), (0x1F300, 0x1FAFF),
              (0x1D400, 0x1D7FF), (0xE0000, 0xE007F), (0x10FFF0, 0x10FFFF)]

    def _random_text(self) -> str:
        rng = self.rng
        out = []
        for _ in range(rng.randrange(1, 40)):
            low, high = rng.choice(self.RANGES)
            out.append("".join(chr(rng.randint(low, high)) for _ in range(rng.randrange(1, 12))))
            if rng.random() < 0.3:
                out.append(rng.choice([" ", "  ", "\t", "$AAPL", "$brk.b", "word", "Ünïcödé", "[CLS]", "[SEP]",
                                       "##ing", "[UNK]", "[MASK]", "don't", "3.5%", "e\u0301"]))
        return "".join(out).replace("\x00", "")

    def _havoc(self, data: bytes) -> bytes:
        rng = self.rng
        out = bytearray(data)
        for _ in range(rng.choice([1, 1, 2, 3, 5, 8])):
            op = rng.randrange(7)
            at = rng.randrange(len(out) + 1)
            if op == 0 and out:  # flip a bit
                i = rng.randrange(len(out))
                out[i] ^= 1 << rng.randrange(8)
            elif op == 1 and out:  # a random byte
                out[rng.randrange(len(out))] = rng.randrange(256)
            elif op == 2:  # an interesting token
                out[at:at] = rng.choice(INTERESTING_BYTES)
            elif op == 3 and out:  # delete a range
                out[at:at + rng.randrange(1, 16)] = b""
            elif op == 4 and out:  # repeat a range
                start = rng.randrange(len(out))
                out[at:at] = out[start:start + rng.randrange(1, 64)] * rng.randrange(1, 4)
            elif op == 5:  # truncate
                del out[at:]
            elif op == 6 and self.pool:  # splice with another record
                other = rng.choice(self.pool).value or b""
                cut = rng.randrange(len(other) + 1)
                out = out[:at] + bytearray(other[cut:])
        return bytes(out[:900_000])

    def _json_mutation(self, data: bytes) -> bytes:
        rng = self.rng
        try:
            document = json.loads(data)
        except (ValueError, RecursionError):
            return self._havoc(data)
        if isinstance(document, dict) and document:
            key = rng.choice(list(document))
            action = rng.randrange(4)
            if action == 0:
                document[key] = rng.choice(HOSTILE_VALUES)
            elif action == 1:
                document[rng.choice([key.upper(), key + " ", "", "\x00", key * 2])] = document.pop(key)
            elif action == 2 and isinstance(document[key], str):
                text = document[key]
                at = rng.randrange(len(text) + 1)
                document[key] = text[:at] + rng.choice(SCRIPTS + ["\x00", "\ud800", "\\", '"']) + text[at:]
            else:
                document = rng.choice([[document], {"message": document}, [document, document]])
        else:
            document = {"wrapped": document}
        try:
            return json.dumps(document, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
        except (ValueError, RecursionError):
            return self._havoc(data)
