"""Tests of the DML parser and resolver (``primogeni.sim.dml.parser``)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from primogeni.errors import DmlError, ModelError
from primogeni.sim.dml.parser import (
    DmlAttr,
    DmlList,
    format_location,
    load,
    parse,
    parse_files,
    resolve,
)


def dml(text: str) -> str:
    """Dedent a DML snippet; its first line is line 1."""
    return textwrap.dedent(text).lstrip("\n")


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the first occurrence of ``needle`` in ``text``."""
    index = text.index(needle)
    return text.count("\n", 0, index) + 1


def sub(lst: DmlList, *keys: str) -> DmlList:
    """Follow the first attribute with each key; each must be a list."""
    for key in keys:
        attr = lst.find(key)
        assert attr is not None, f"{lst.path} has no {key}"
        lst = attr.as_list()
    return lst


def values(lst: DmlList, key: str) -> list[str]:
    return [attr.as_text() for attr in lst.find_all(key)]


def raises_dml(text: str, filename: str = "m.dml", *, resolved: bool = False) -> DmlError:
    with pytest.raises(DmlError) as info:
        tree = parse(text, filename)
        if resolved:
            resolve(tree)
    return info.value


# A small SSFNet-style model: a network of hosts, routers and links, a nested Net, and a
# dictionary the model draws on through _extends and _find.
MODEL = dml(
    """
    # A two-level network in the SSFNet style.
    Net [
      id 0
      frequency 1000000000          # ticks per second
      host [ id 1
        _extends .dictionary.hosts.client
        interface [ id 0 _extends .dictionary.ifaces.fast ip "10.0.0.1/24" ]
      ]
      host [ id 2 interface [ id 0 bitrate 1e7 ] ]
      router [ id 3 _extends .dictionary.routers.core ]
      Net [ id 4
        host [ id 1 interface [ id 0 ] ]
        link [ attach 1(0) attach 2(1) ]
      ]
      link [ attach 1(0) attach 3(0) attach 4:1(0) _find .dictionary.delay ]
      link [ attach 2(0) attach 3(1) delay 0.005 ]
      traffic [ pattern [ client 1 servers [ list "web servers" port 80 nhi 0:1(0) ] ] ]
    ]
    dictionary [
      delay 0.001
      ifaces [
        fast [ bitrate 1e8 latency 0.0001 ]
        slow [ bitrate 1e6 _extends .dictionary.ifaces.fast ]
      ]
      routers [
        core [
          graph [ ProtocolSession [ name ip use "SSF.OS.IP" ]
                  ProtocolSession [ name tcp use "SSF.OS.TCP.tcpSessionMaster"
                                    _find .dictionary.tcpinit ] ]
          interface [ id 0 _extends .dictionary.ifaces.fast ]
          interface [ id 1 _extends .dictionary.ifaces.slow ]
        ]
      ]
      hosts [
        client [ nhi_route [ dest default interface 0 ] _find .dictionary.routers.core.graph ]
      ]
      tcpinit [ ISS 10000 MSS 1460 RcvWndSize 32 ]
    ]
    """
)


# -- syntax ------------------------------------------------------------------------------


def test_parse_keeps_the_tree_as_written() -> None:
    root = parse(MODEL, "model.dml")
    assert root.keys() == ["Net", "dictionary"]
    net = sub(root, "Net")
    assert net.keys() == ["id", "frequency", "host", "router", "Net", "link", "traffic"]
    assert values(net, "id") == ["0"]
    assert [h.as_list().get("id") for h in net.find_all("host")] == ["1", "2"]
    host1 = net.find_all("host")[0].as_list()
    assert [(a.key, a.value) for a in host1 if isinstance(a.value, str)] == [
        ("id", "1"),
        ("_extends", ".dictionary.hosts.client"),
    ]
    inner = sub(net, "Net")
    assert inner.get("id") == "4"
    assert values(sub(inner, "link"), "attach") == ["1(0)", "2(1)"]
    links = net.find_all("link")
    assert values(links[0].as_list(), "attach") == ["1(0)", "3(0)", "4:1(0)"]
    assert links[0].as_list().get("_find") == ".dictionary.delay"
    assert sub(net, "traffic", "pattern", "servers").get("nhi") == "0:1(0)"
    assert sub(net, "traffic", "pattern", "servers").get("list") == "web servers"


def test_atoms_are_verbatim_tokens() -> None:
    root = parse('a 1e8 b 1(0) c 0:1(2) d 10.0.0.0/24 e -3.5 f http://x/y?z=1 g a"b')
    assert [(a.key, a.value) for a in root] == [
        ("a", "1e8"),
        ("b", "1(0)"),
        ("c", "0:1(2)"),
        ("d", "10.0.0.0/24"),
        ("e", "-3.5"),
        ("f", "http://x/y?z=1"),
        ("g", 'a"b'),
    ]


def test_keys_may_use_digits_dash_and_underscore() -> None:
    root = parse("10 a  x-y b  _private c  CamelCase d")
    assert root.keys() == ["10", "x-y", "_private", "CamelCase"]


def test_quoted_strings_decode_escapes() -> None:
    text = dml(
        r"""
        plain "two words"
        empty ""
        brackets "[ not a list ] # not a comment"
        quote "say \"hi\""
        control "a\tb\nc"
        octal "\101\102"
        hexa "\x41\x4a"
        backslash "a\\b"
        other "\q\["
        multi "first
        second"
        after 1
        """
    )
    root = parse(text)
    assert root.get("plain") == "two words"
    assert root.get("empty") == ""
    assert root.get("brackets") == "[ not a list ] # not a comment"
    assert root.get("quote") == 'say "hi"'
    assert root.get("control") == "a\tb\nc"
    assert root.get("octal") == "AB"
    assert root.get("hexa") == "AJ"
    assert root.get("backslash") == "a\\b"
    assert root.get("other") == "q["
    assert root.get("multi") == "first\nsecond"
    after = root.find("after")
    assert after is not None and after.line == line_of(text, "after")


def test_comments_run_to_the_end_of_the_line() -> None:
    text = dml(
        """
        # a comment line
        a 1 # trailing comment [ ] "
        b 2#glued to the value
        #c 3
        list [ # a comment inside a list
          d 4 ]
        """
    )
    root = parse(text)
    assert [(a.key, a.value) for a in root if isinstance(a.value, str)] == [("a", "1"), ("b", "2")]
    assert sub(root, "list").get("d") == "4"


def test_locations_are_file_and_line() -> None:
    text = dml(
        """
        Net
        [
          host [ id 1 ]
          router [
            id 2 ]
        ]
        """
    )
    root = parse(text, "net.dml")
    net_attr = root.find("Net")
    assert net_attr is not None
    assert (net_attr.file, net_attr.line, net_attr.location) == ("net.dml", 1, "net.dml:1")
    net = net_attr.as_list()
    assert net.location == "net.dml:2"  # the line of '['
    assert net.path == ".Net"
    router = net.find("router")
    assert router is not None and router.line == 4
    assert router.as_list().find("id") == DmlAttr("id", "2", "net.dml", 5)
    assert router.as_list().path == ".Net.router"
    assert root.path == "." and root.location == "net.dml:1"
    assert format_location("a.dml", 7) == "a.dml:7"


def test_list_api() -> None:
    root = parse("a [ x 1 y 2 x 3 s [ t 4 ] ]", "api.dml")
    a = sub(root, "a")
    assert len(a) == 4
    assert [attr.key for attr in a] == ["x", "y", "x", "s"]
    assert a.keys() == ["x", "y", "s"]
    first = a.find("x")
    assert first is not None and first.value == "1"
    assert values(a, "x") == ["1", "3"]
    assert a.find("missing") is None
    assert a.find_all("missing") == []
    assert a.get("y") == "2"
    assert a.get("missing") is None
    assert a.get("missing", "dflt") == "dflt"
    assert "a" in repr(a) and "api.dml:1" in repr(a)
    with pytest.raises(DmlError) as info:
        a.get("s")
    assert info.value.location == "api.dml:1"
    assert "must be a value" in info.value.reason
    with pytest.raises(DmlError) as info:
        a.find_all("x")[1].as_list()
    assert "must be a list" in info.value.reason


def test_empty_lists_and_empty_text() -> None:
    assert len(parse("")) == 0
    assert len(parse("  # nothing here\n\n")) == 0
    assert len(sub(parse("a [ ]"), "a")) == 0
    assert len(sub(parse("a []"), "a")) == 0


def test_crlf_and_tabs() -> None:
    root = parse("a\t1\r\nb [\r\n\tc 2\r\n]\r\nd 3\r\n", "dos.dml")
    assert root.get("a") == "1" and sub(root, "b").get("c") == "2"
    d = root.find("d")
    assert d is not None and d.line == 5


def test_dml_error_is_a_model_error_and_value_error() -> None:
    err = raises_dml("a [", "x.dml")
    assert isinstance(err, ModelError) and isinstance(err, ValueError)
    assert str(err).startswith("x.dml:1: ")


# -- syntax errors ---------------------------------------------------------------------

SYNTAX_ERRORS = [
    # (text, location, words the message must contain)
    ("a [\n  b [\n    c 1\n", "m.dml:2", "never closed"),
    ("Net [\n  host [ id 1 ]\n  host [ id 2\n]\n", "m.dml:1", "'[' of 'Net' is never closed"),
    ("host\n\n[\n  id 1\n", "m.dml:3", "never closed"),
    ("a 1\n]\n", "m.dml:2", "']' has no matching '['"),
    ("a [ b 1 ] ]", "m.dml:1", "no matching"),
    ("a 1\nb\n", "m.dml:2", "key 'b' has no value"),
    ("x [\n  id\n]\n", "m.dml:2", "key 'id' has no value"),
    ("x [\n  id   # the value is missing\n\n]\n", "m.dml:2", "key 'id' has no value"),
    ('a 1\nb "hello\nworld\n', "m.dml:2", "string is never closed"),
    ('a "x" "oops', "m.dml:1", "string is never closed"),
    ("a 1\n[ b 1 ]\n", "m.dml:2", "'[' has no key"),
    ("a [ [ b 1 ] ]", "m.dml:1", "'[' has no key"),
    ('a 1\n"b" 2\n', "m.dml:2", 'expected a key, found the quoted string "b"'),
    ("a 1\nhost.1 [ ]\n", "m.dml:2", "'host.1' is not a valid key"),
    ("a 1\nb(2) 3\n", "m.dml:2", "'b(2)' is not a valid key"),
]


@pytest.mark.parametrize(("text", "location", "words"), SYNTAX_ERRORS)
def test_syntax_errors_point_at_the_cause(text: str, location: str, words: str) -> None:
    err = raises_dml(text)
    assert err.location == location
    assert words in err.reason
    assert str(err).startswith(location + ": ")


def test_syntax_error_names_the_element() -> None:
    err = raises_dml("Net [\n  host [\n    id\n  ]\n]\n")
    assert err.element == ".Net.host.id"


# -- resolution --------------------------------------------------------------------------


def test_resolve_expands_extends_and_find() -> None:
    root = resolve(parse(MODEL, "model.dml"))
    net = sub(root, "Net")

    router = sub(net, "router")
    assert router.keys() == ["id", "graph", "interface"]
    assert router.get("id") == "3"
    ifaces = [i.as_list() for i in router.find_all("interface")]
    assert [i.get("id") for i in ifaces] == ["0", "1"]
    assert values(ifaces[0], "bitrate") == ["1e8"]
    # slow: its own bitrate first, then what it inherits from fast (a chain of _extends)
    assert values(ifaces[1], "bitrate") == ["1e6", "1e8"]
    assert ifaces[1].get("bitrate") == "1e6" and ifaces[1].get("latency") == "0.0001"

    # _find puts the attribute it names (key and value) in place of itself
    tcp = router.find_all("graph")[0].as_list().find_all("ProtocolSession")[1].as_list()
    assert tcp.keys() == ["name", "use", "tcpinit"]
    assert sub(tcp, "tcpinit").get("MSS") == "1460"
    link = net.find_all("link")[0].as_list()
    assert link.get("delay") == "0.001"

    # a host inherits a list whose own _find names a list holding further references
    host = net.find_all("host")[0].as_list()
    assert host.keys() == ["id", "interface", "nhi_route", "graph"]
    assert sub(host, "interface").get("ip") == "10.0.0.1/24"
    assert sub(host, "interface").get("bitrate") == "1e8"
    assert sub(host, "graph", "ProtocolSession").get("use") == "SSF.OS.IP"


def test_resolved_tree_has_no_references_left() -> None:
    root = resolve(parse(MODEL, "model.dml"))
    todo = [root]
    while todo:
        lst = todo.pop()
        for attr in lst:
            assert attr.key not in ("_find", "_extends")
            if isinstance(attr.value, DmlList):
                todo.append(attr.value)


def test_resolved_attributes_keep_where_they_were_written() -> None:
    root = resolve(parse(MODEL, "model.dml"))
    router = sub(root, "Net", "router")
    graph = router.find("graph")
    assert graph is not None
    assert graph.location == f"model.dml:{line_of(MODEL, 'graph [')}"
    assert graph.as_list().path == ".dictionary.routers.core.graph"
    delay = sub(root, "Net").find_all("link")[0].as_list().find("delay")
    assert delay is not None and delay.location == f"model.dml:{line_of(MODEL, 'delay 0.001')}"
    # the list that holds _extends keeps its own place
    assert router.location == f"model.dml:{line_of(MODEL, 'router [')}"
    assert router.path == ".Net.router"


def test_local_attributes_come_before_inherited_ones() -> None:
    text = dml(
        """
        base [ bw 1 queue droptail ]
        a [ _extends .base bw 5 ]
        b [ bw 7 _extends .base ]
        """
    )
    root = resolve(parse(text))
    for key, bw in (("a", "5"), ("b", "7")):
        lst = sub(root, key)
        assert lst.get("bw") == bw
        assert values(lst, "bw") == [bw, "1"]
        assert lst.get("queue") == "droptail"


def test_several_extends_are_inherited_in_order() -> None:
    text = "p [ x 1 ] q [ x 2 y 2 ] r [ _extends .p _extends .q z 3 ]"
    r = sub(resolve(parse(text)), "r")
    assert [(a.key, a.value) for a in r] == [("z", "3"), ("x", "1"), ("x", "2"), ("y", "2")]


def test_relative_paths_start_at_the_list_holding_the_reference() -> None:
    text = dml(
        """
        Net [
          defaults [ bw 10 ]
          link [ attach 1(0) ]
          _find defaults.bw
          sub [ _extends .Net.defaults ]
        ]
        """
    )
    net = sub(resolve(parse(text)), "Net")
    assert net.get("bw") == "10"
    assert sub(net, "sub").get("bw") == "10"
    for bad in ("host [ _find defaults.bw ]", "host [ _extends defaults ]"):
        with pytest.raises(DmlError) as info:
            resolve(parse(f"Net [ defaults [ bw 10 ] {bad} ]"))
        assert "nothing found: .Net.host (at <string>:1) has no 'defaults'" in info.value.reason


def test_paths_go_through_extends_and_find() -> None:
    text = dml(
        """
        dict [
          base [ graph [ name ip ] ]
          mid [ _extends .dict.base ]
          alias [ _find .dict.base.graph ]
        ]
        a [ _find .dict.mid.graph.name ]
        b [ _find .dict.alias.graph.name ]
        """
    )
    root = resolve(parse(text))
    assert sub(root, "a").get("name") == "ip"
    assert sub(root, "b").get("name") == "ip"


def test_path_search_tries_every_same_key_attribute() -> None:
    text = "a [ id 1 ] a [ id 2 x 5 ] b [ _find .a.x ]"
    assert sub(resolve(parse(text)), "b").get("x") == "5"


def test_find_takes_the_first_match() -> None:
    text = "a [ x 1 ] a [ x 2 ] b [ _find .a.x ]"
    assert sub(resolve(parse(text)), "b").get("x") == "1"


def test_references_in_inherited_lists_resolve_where_they_were_written() -> None:
    text = dml(
        """
        dict [
          bw 100
          base [ _find bw ]
        ]
        dict2 [ bw 5 ]
        host [ _extends .dict.base ]
        """
    )
    # 'bw' is relative to dict.base, where the _find is written, not to host.
    with pytest.raises(DmlError) as info:
        resolve(parse(text, "rel.dml"))
    assert info.value.location == f"rel.dml:{line_of(text, '_find bw')}"
    text = text.replace("base [ _find bw ]", "base [ _find .dict.bw ]")
    assert sub(resolve(parse(text)), "host").get("bw") == "100"


def test_schema_is_an_ordinary_attribute() -> None:
    text = "_schema .schemas.Net\nschemas [ Net [ id %I1 ] ]\nNet [ _schema .schemas.Net id 1 ]"
    root = resolve(parse(text))
    assert root.get("_schema") == ".schemas.Net"
    assert sub(root, "Net").keys() == ["_schema", "id"]


def test_resolve_shares_and_keeps_unchanged_subtrees() -> None:
    plain = parse("a [ b [ c 1 ] ] d 2")
    assert resolve(plain) is plain
    root = parse(MODEL, "model.dml")
    resolved = resolve(root)
    # the input tree is left as it was
    assert sub(root, "Net", "router").get("_extends") == ".dictionary.routers.core"
    assert sub(resolved, "Net", "traffic") is sub(root, "Net", "traffic")
    # one dictionary list, inherited twice, is resolved once
    core = sub(resolved, "dictionary", "routers", "core")
    assert sub(resolved, "Net", "router", "graph") is sub(core, "graph")
    assert sub(resolved, "Net", "host", "graph") is sub(core, "graph")
    assert resolve(resolved) is resolved


# -- resolution errors -------------------------------------------------------------------


def test_unresolvable_find_names_the_path_and_its_place() -> None:
    text = dml(
        """
        dictionary [ routers [ fast [ bw 1 ] ] ]
        Net [
          router [ id 1 _find .dictionary.routers.slow ]
        ]
        """
    )
    err = raises_dml(text, "net.dml", resolved=True)
    assert err.location == "net.dml:3"
    assert "_find .dictionary.routers.slow" in err.reason
    assert "has no 'slow'" in err.reason
    assert "'routers' at net.dml:1" in err.reason
    assert err.element == ".Net.router"


def test_unresolvable_path_through_a_value() -> None:
    err = raises_dml("a [ b 1 ]\nc [\n  _extends .a.b.c\n]\n", resolved=True)
    assert err.location == "m.dml:3"
    assert "'b' at m.dml:1 is a value, not a list" in err.reason


def test_a_reference_does_not_see_itself() -> None:
    err = raises_dml("a [\n  _find .a.x\n]\n", resolved=True)
    assert err.location == "m.dml:2"
    assert "nothing found: 'a' at m.dml:1 has no 'x'" in err.reason


def test_unresolvable_first_step() -> None:
    err = raises_dml("a [ _extends .nowhere ]", resolved=True)
    assert "_extends .nowhere" in err.reason and "has no 'nowhere'" in err.reason


def test_extends_must_name_a_list() -> None:
    text = "dictionary [ bw 1e8 ]\nhost [\n  _extends .dictionary.bw\n]\n"
    err = raises_dml(text, resolved=True)
    assert err.location == "m.dml:3"
    assert "names the value '1e8' written at m.dml:1, not a list" in err.reason


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a [ _find [ x 1 ] ]", "'_find' takes a key path, not a list"),
        ("a [ _extends [ x 1 ] ]", "'_extends' takes a key path, not a list"),
        ("a [ _find .b..c ]", "has an empty step"),
        ("a [ _find .b. ]", "has an empty step"),
        ("a [ _find . ]", "names the root"),
        ("a [ _find .b._extends ]", "reserved key '_extends'"),
        ("a [ _find .b.c(0) ]", "invalid step 'c(0)'"),
    ],
)
def test_bad_reference_values(text: str, words: str) -> None:
    err = raises_dml(text, resolved=True)
    assert err.location == "m.dml:1"
    assert words in err.reason


@pytest.mark.parametrize(
    ("text", "location"),
    [
        ("a [\n  _extends .a\n]\n", "m.dml:2"),  # a list extending itself
        ("a [ _extends .b ]\nb [ _extends .a ]\n", "m.dml:1"),  # two lists, each other
        ("a [ _extends .b ]\nb [ _extends .c ]\nc [ _extends .a ]\n", "m.dml:1"),
        ("x 1\na [\n  _find .a\n]\n", "m.dml:3"),  # a list containing itself
        ("a [\n  b [ _extends .a ]\n]\n", "m.dml:2"),  # a list inheriting its parent
        ("a [ _find .b.x ]\nb [ _find .a.x ]\n", "m.dml:1"),
    ],
)
def test_reference_cycles_are_reported(text: str, location: str) -> None:
    err = raises_dml(text, resolved=True)
    assert "reference cycle" in err.reason
    assert err.location == location


def test_cycle_message_lists_the_references() -> None:
    err = raises_dml("a [ _extends .b ]\nb [ _extends .a ]\n", resolved=True)
    assert err.reason == (
        "reference cycle: _extends .b (m.dml:1) -> _extends .a (m.dml:2) -> _extends .b (m.dml:1)"
    )


def test_reference_inside_the_list_it_names_is_fine_when_found_locally() -> None:
    text = "Net [ foo 1 _find .Net.foo ]"
    assert values(sub(resolve(parse(text)), "Net"), "foo") == ["1", "1"]


# -- several files ---------------------------------------------------------------------

DICTIONARY = dml(
    """
    # shared definitions
    dictionary [
      routers [ fast [ interface [ id 0 bitrate 1e9 ] ] ]
      delay 0.002
    ]
    """
)
NET = dml(
    """
    Net [
      router [ id 1 _extends .dictionary.routers.fast ]
      link [ attach 1(0) _find .dictionary.delay ]
    ]
    """
)


def test_files_are_merged_into_one_root(tmp_path: Path) -> None:
    (tmp_path / "model.dml").write_text(NET)
    (tmp_path / "dictionary.dml").write_text(DICTIONARY)
    model, dictionary = str(tmp_path / "model.dml"), str(tmp_path / "dictionary.dml")

    raw = parse_files([model, dictionary])
    assert raw.keys() == ["Net", "dictionary"]
    assert raw.file == model

    root = load([model, Path(dictionary)])
    router = sub(root, "Net", "router")
    iface = router.find("interface")
    assert iface is not None and iface.location == f"{dictionary}:3"
    assert router.location == f"{model}:2"
    assert sub(root, "Net", "link").get("delay") == "0.002"


def test_one_file_may_be_given_alone(tmp_path: Path) -> None:
    path = tmp_path / "all.dml"
    path.write_text(NET + DICTIONARY)
    assert sub(load(path), "Net", "router", "interface").get("bitrate") == "1e9"
    assert load(str(path)).file == str(path)


def test_errors_name_the_file_they_are_in(tmp_path: Path) -> None:
    (tmp_path / "model.dml").write_text(NET)
    (tmp_path / "bad.dml").write_text("dictionary [\n  delay\n]\n")
    with pytest.raises(DmlError) as info:
        load([tmp_path / "model.dml", tmp_path / "bad.dml"])
    assert info.value.location == f"{tmp_path / 'bad.dml'}:2"

    (tmp_path / "dict.dml").write_text("dictionary [ routers [ ] ]\n")
    with pytest.raises(DmlError) as info:
        load([tmp_path / "model.dml", tmp_path / "dict.dml"])
    assert info.value.location == f"{tmp_path / 'model.dml'}:2"
    assert "has no 'fast'" in info.value.reason


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.dml"
    with pytest.raises(DmlError) as info:
        load(missing)
    assert info.value.location == str(missing)
    assert "cannot read" in info.value.reason
    binary = tmp_path / "binary.dml"
    binary.write_bytes(b"a \xff\xfe\n")
    with pytest.raises(DmlError) as info:
        load(binary)
    assert "not UTF-8" in info.value.reason
    with pytest.raises(DmlError):
        parse_files([])


# -- a large model ---------------------------------------------------------------------


def test_a_large_model(tmp_path: Path) -> None:
    hosts = 20_000
    lines = [
        "dictionary [",
        "  hosts [ client [ graph [ ProtocolSession [ name ip use SSF.OS.IP ] ] ] ]",
        "  ifaces [ eth [ bitrate 1e8 latency 0.0001 ] ]",
        "]",
        "Net [",
        "  id 0",
    ]
    for i in range(hosts):
        lines.append(
            f"  host [ id {i} _extends .dictionary.hosts.client  # host {i}\n"
            f'    interface [ id 0 _extends .dictionary.ifaces.eth ip "10.{i >> 8}.{i & 255}.1" ] ]'
        )
    for i in range(1, hosts):
        lines.append(f"  link [ attach 0(0) attach {i}(0) delay 1e-3 ]")
    lines.append("]")
    text = "\n".join(lines) + "\n"
    assert len(text) > 2_000_000
    path = tmp_path / "big.dml"
    path.write_text(text)

    root = load(path)

    net = sub(root, "Net")
    all_hosts = net.find_all("host")
    assert len(all_hosts) == hosts
    assert len(net.find_all("link")) == hosts - 1
    host = all_hosts[12_345]
    assert host.line == 6 + 2 * 12_345 + 1
    lst = host.as_list()
    assert lst.get("id") == "12345"
    assert sub(lst, "interface").get("ip") == f"10.{12_345 >> 8}.{12_345 & 255}.1"
    assert sub(lst, "interface").get("bitrate") == "1e8"
    assert sub(lst, "graph") is sub(all_hosts[0].as_list(), "graph")
    last_link = net.find_all("link")[-1]
    assert values(last_link.as_list(), "attach") == ["0(0)", f"{hosts - 1}(0)"]


def test_deep_nesting_parses_and_too_deep_resolution_is_an_error() -> None:
    depth = 5_000
    root = parse("a [ " * depth + "x 1" + " ]" * depth)
    lst = root
    for _ in range(depth):
        lst = sub(lst, "a")
    assert lst.get("x") == "1"
    with pytest.raises(DmlError) as info:
        resolve(parse("d [ y 2 ] " + "a [ " * depth + "_find .d.y" + " ]" * depth))
    assert "nested too deeply" in info.value.reason
