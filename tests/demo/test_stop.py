"""The stop-sequence matcher (sans-I/O): any split of the output into pieces gives
exactly the text of the whole-output truncation, the stop text is never emitted, and
nothing is held back longer than it could still be the start of a stop sequence."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_stream.demo.stop import StopMatcher, truncate

# A small alphabet makes overlaps and near misses common; "é" and "🙂" are multi-byte.
ALPHABET = st.sampled_from("ab\nXé🙂")
TEXT = st.text(ALPHABET, max_size=40)
STOPS = st.lists(st.text(ALPHABET, min_size=1, max_size=5), min_size=0, max_size=4)


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def run(pieces: list[str], stops: list[str]) -> tuple[str, str | None, list[str]]:
    m = StopMatcher(stops)
    out, held = [], []
    for piece in pieces:
        out.append(m.push(piece))
        held.append(m.held)
    out.append(m.flush())
    return "".join(out), m.matched, held


@settings(max_examples=600, deadline=None)
@given(TEXT, STOPS, st.lists(st.integers(0, 1000), max_size=12))
def test_any_split_gives_the_whole_text_truncation(text: str, stops: list[str], cuts: list[int]) -> None:
    expected, expected_stop = truncate(text, stops)
    emitted, matched, _ = run(split(text, cuts), stops)
    assert emitted == expected
    assert matched == expected_stop
    assert not any(s in emitted for s in stops if s)  # no stop text is ever emitted
    if matched is not None:
        assert text.startswith(expected + matched)


@settings(max_examples=400, deadline=None)
@given(TEXT, STOPS)
def test_one_character_at_a_time(text: str, stops: list[str]) -> None:
    emitted, matched, _ = run(list(text), stops)
    assert (emitted, matched) == truncate(text, stops)


@settings(max_examples=400, deadline=None)
@given(TEXT, STOPS, st.lists(st.integers(0, 1000), max_size=12))
def test_hold_back_is_minimal(text: str, stops: list[str], cuts: list[int]) -> None:
    """What is held is exactly the longest tail that is a proper prefix of a stop:
    text is emitted as soon as it cannot be the start of one."""
    m = StopMatcher(stops)
    real = [s for s in stops if s]
    seen = ""
    emitted = ""
    for piece in split(text, cuts):
        emitted += m.push(piece)
        seen += piece
        if m.stopped:
            break
        assert emitted + m.held == seen
        longest = max((k for s in real for k in range(1, len(s)) if k <= len(seen) and seen.endswith(s[:k])), default=0)
        assert len(m.held) == longest


def test_examples() -> None:
    m = StopMatcher(["\nUser:"])
    assert m.push("Hello\nUs") == "Hello"
    assert m.held == "\nUs"
    assert m.push("er: hi") == ""
    assert m.matched == "\nUser:" and m.stopped
    assert m.push("more") == "" and m.flush() == ""

    m = StopMatcher(["abc"])
    assert m.push("xab") == "x"
    assert m.push("d") == "abd"  # a near miss is released in full
    assert m.flush() == ""

    m = StopMatcher(["END"])
    assert m.push("the EN") == "the "
    assert m.flush() == "EN"  # the output ended: held text is not lost

    # The stop that completes first wins, even when another started earlier.
    assert truncate("abcd", ["abcd", "bc"]) == ("a", "bc")
    # Of two completing at the same character, the longer (earlier start).
    assert truncate("xabc", ["bc", "abc"]) == ("x", "abc")
    assert truncate("no stop here", ["zz"]) == ("no stop here", None)

    m = StopMatcher([])
    assert m.push("anything") == "anything" and not m.stopped
    assert StopMatcher(["", "x"]).stops == ("x",)
