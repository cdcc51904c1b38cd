"""The gate's verdict logic, on made-up outcomes (the real runs are in test_peer_suites)."""

from __future__ import annotations

from tests.peers.compare import Entry, compare, matches

P, F = {"outcome": "passed"}, {"outcome": "failed"}


def test_star_is_the_only_wildcard_and_brackets_are_literal() -> None:
    assert matches("t.py::test_a[*]", "t.py::test_a[asyncio]")
    assert matches("t.py::test_a[*-x]", "t.py::test_a[True-x]")
    assert not matches("t.py::test_a[*-x]", "t.py::test_a[True-y]")
    assert not matches("t.py::test_a[ab]", "t.py::test_a[a]")  # not a character class
    assert not matches("t.py::test_a", "t.py::test_a[x]")  # the whole id


def test_every_test_that_passed_without_the_line_must_pass_with_it() -> None:
    c = compare("s", {"a": P, "b": P, "c": F}, {"a": P, "b": F, "c": F}, [], [])
    assert (c.tests, c.passed_without, c.passed_with) == (3, 2, 1)
    assert c.unexpected == ["b"] and not c.ok


def test_a_test_missing_from_the_run_with_the_line_is_a_regression() -> None:
    c = compare("s", {"a": P}, {}, [], [])
    assert c.unexpected == ["a"]


def test_allowed_and_known_differences_keep_the_gate_green() -> None:
    allowed = Entry("s", ("a",), "reason")
    known = Entry("s", ("b*",), "reason", defects=("1",))
    c = compare("s", {"a": P, "b1": P, "b2": P}, {"a": F, "b1": F, "b2": F}, [allowed], [known])
    assert c.ok
    assert [n for n, _ in c.allowed] == ["a"] and [n for n, _ in c.known] == ["b1", "b2"]


def test_a_known_regression_that_passes_must_be_removed() -> None:
    known = Entry("s", ("b",), "reason", defects=("1",))
    c = compare("s", {"b": P}, {"b": P}, [], [known])
    assert [n for n, _ in c.fixed] == ["b"] and not c.ok


def test_an_entry_must_match_only_tests_whose_outcome_differs() -> None:
    allowed = Entry("s", ("a*",), "reason")
    c = compare("s", {"a1": P, "a2": P}, {"a1": F, "a2": P}, [allowed], [])
    assert [n for n, _ in c.broad] == ["a2"] and not c.ok


def test_an_entry_matching_nothing_that_differs_is_stale() -> None:
    allowed = Entry("s", ("gone",), "reason")
    c = compare("s", {"a": P}, {"a": P}, [allowed], [])
    assert c.stale == [allowed] and not c.ok


def test_entries_of_other_suites_are_ignored() -> None:
    c = compare("s", {"a": P}, {"a": P}, [Entry("other", ("a",), "r")], [])
    assert c.ok


def test_passing_only_with_the_line_is_reported_not_an_error() -> None:
    c = compare("s", {"a": F}, {"a": P}, [], [])
    assert c.improved == ["a"] and c.ok
