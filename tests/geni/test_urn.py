"""URNs: round trips, every GENI escape, and the name rules."""

from __future__ import annotations

import pytest

from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import UrnError
from primogeni.geni.urn import (
    Urn,
    check_project_name,
    check_slice_name,
    check_user_name,
    escape,
    project_urn,
    slice_urn,
    unescape,
    user_urn,
)


def test_slice_urn_round_trip() -> None:
    urn = Urn.parse("urn:publicid:IDN+primo:proj1+slice+exp1")
    assert urn == Urn("primo:proj1", "slice", "exp1")
    assert urn.top_authority == "primo"
    assert urn.project == "proj1"
    assert str(urn) == "urn:publicid:IDN+primo:proj1+slice+exp1"


def test_authority_urn_has_no_project() -> None:
    urn = Urn.parse("urn:publicid:IDN+primo+authority+sa")
    assert (urn.authority, urn.type, urn.name) == ("primo", "authority", "sa")
    assert urn.top_authority == "primo"
    assert urn.project is None


def test_dotted_authorities_from_other_federations() -> None:
    urn = Urn.parse("urn:publicid:IDN+ch.geni.net:my-proj+slice+x")
    assert urn.top_authority == "ch.geni.net"
    assert urn.project == "my-proj"
    assert str(Urn.parse("urn:publicid:IDN+geni:gpo:gcf+user+alice")) == "urn:publicid:IDN+geni:gpo:gcf+user+alice"


def test_prefix_is_case_insensitive() -> None:
    assert Urn.parse("URN:PUBLICID:idn+primo+user+alice") == user_urn("primo", "alice")


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        ("a%b", "a%25b"),
        ("a;b", "a%3Bb"),
        ("a+b", "a%2Bb"),
        ("a b", "a+b"),
        ("a#b", "a%23b"),
        ("a?b", "a%3Fb"),
        ("a'b", "a%27b"),
        ("a::b", "a;b"),
        ("a:b", "a%3Ab"),
        ("a/b", "a%2Fb"),
        ("a:::b", "a;%3Ab"),
        ("%3A", "%253A"),
        ("two  spaces", "two++spaces"),
    ],
)
def test_every_escape_round_trips(name: str, escaped: str) -> None:
    assert escape(name) == escaped
    assert unescape(escaped) == name
    urn = Urn("primo", "node", name)
    assert str(urn) == f"urn:publicid:IDN+primo+node+{escaped}"
    assert Urn.parse(str(urn)) == urn


def test_escapes_are_case_insensitive_on_input() -> None:
    assert Urn.parse("urn:publicid:IDN+primo+node+a%2fb").name == "a/b"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "does not start with"),
        ("urn:foo:bar", "does not start with"),
        ("urn:publicid:IDN+primo+slice", "authority, type and name"),
        ("urn:publicid:IDN+primo+slice+", "empty name"),
        ("urn:publicid:IDN++slice+x", "empty authority"),
        ("urn:publicid:IDN+primo::x+slice+x", "sub-authority ''"),
        ("urn:publicid:IDN+pri$mo+slice+x", "sub-authority 'pri$mo'"),
        ("urn:publicid:IDN+primo+1slice+x", "URN type '1slice'"),
        ("urn:publicid:IDN+primo+slice+a%ZZ", "unknown escape '%ZZ'"),
        ("urn:publicid:IDN+primo+slice+a%4", "unknown escape '%4'"),
        ("urn:publicid:IDN+primo+slice+a\x00b", "control character"),
        ("urn:publicid:IDN+primo+slice+" + "x" * 1100, "limit is 1024"),
    ],
)
def test_bad_urns_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(UrnError) as info:
        Urn.parse(text)
    assert info.value.code == GeniCode.BADARGS
    assert fragment in str(info.value)


def test_parse_refuses_non_strings() -> None:
    with pytest.raises(UrnError, match="must be a string"):
        Urn.parse(b"urn:publicid:IDN+primo+user+alice")  # type: ignore[arg-type]


def test_constructor_validates_parts() -> None:
    with pytest.raises(UrnError, match="empty authority"):
        Urn("", "user", "alice")
    with pytest.raises(UrnError, match="empty URN name"):
        Urn("primo", "user", "")


@pytest.mark.parametrize("name", ["a", "exp1", "Exp-2", "0abc", "a" * 19])
def test_good_slice_names(name: str) -> None:
    check_slice_name(name)


@pytest.mark.parametrize("name", ["", "-a", "a_b", "a.b", "a b", "a" * 20, "é"])
def test_bad_slice_names(name: str) -> None:
    with pytest.raises(UrnError, match="slice name"):
        check_slice_name(name)


def test_project_names() -> None:
    check_project_name("proj-1")
    check_project_name("p" * 32)
    for bad in ("", "-p", "p" * 33, "p_q", "p:q"):
        with pytest.raises(UrnError, match="project name"):
            check_project_name(bad)


def test_user_names() -> None:
    check_user_name("alice_2")
    for bad in ("", "2alice", "al-ice", "a" * 33, "al ice"):
        with pytest.raises(UrnError, match="user name"):
            check_user_name(bad)


def test_helpers_build_checked_urns() -> None:
    assert str(slice_urn("primo", "proj1", "exp1")) == "urn:publicid:IDN+primo:proj1+slice+exp1"
    assert str(project_urn("primo", "proj1")) == "urn:publicid:IDN+primo+project+proj1"
    assert str(user_urn("primo", "alice")) == "urn:publicid:IDN+primo+user+alice"
    with pytest.raises(UrnError, match="slice name"):
        slice_urn("primo", "proj1", "bad_name")
    with pytest.raises(UrnError, match="project name"):
        slice_urn("primo", "bad:proj", "exp1")
    with pytest.raises(UrnError, match="sub-authority"):
        user_urn("pri mo", "alice")


def test_urns_are_values() -> None:
    a = Urn.parse("urn:publicid:IDN+primo+user+alice")
    assert a == user_urn("primo", "alice")
    assert hash(a) == hash(user_urn("primo", "alice"))
    with pytest.raises(AttributeError):
        a.name = "bob"  # type: ignore[misc]
