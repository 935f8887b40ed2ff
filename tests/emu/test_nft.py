"""libnftables through ctypes: text and JSON commands, errors, namespaces, threads."""

from __future__ import annotations

import ctypes.util
import threading
from collections.abc import Callable

import pytest

from primogeni.emu import nft as nftmod
from primogeni.emu import sys as esys
from primogeni.emu.nft import Nft
from primogeni.errors import EmuError, FeatureMissing


def test_a_missing_library_is_a_feature_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nftmod, "_lib", None)
    monkeypatch.setattr(nftmod, "LIBRARY", "libprimo-no-such-library.so.9")
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert not nftmod.available()
    with pytest.raises(FeatureMissing, match="libnftables"):
        Nft()


@pytest.mark.root
def test_text_and_json_commands(netns_factory: Callable[..., str]) -> None:
    with Nft(netns_factory()) as nft:
        assert nft.run("add table inet primo_t\nadd chain inet primo_t c\n") == ""
        assert "chain c" in nft.run("list table inet primo_t")
        nft.json({"nftables": [{"add": {"chain": {"family": "inet", "table": "primo_t", "name": "d"}}}]})
        names = {item["chain"]["name"] for item in nft.list_json("chains inet")}
        assert names == {"c", "d"}
        answer = nft.json({"nftables": [{"list": {"table": {"family": "inet", "name": "primo_t"}}}]})
        assert any("table" in item for item in answer["nftables"])
        added = nft.echo('add rule inet primo_t c ip saddr 192.0.2.1 counter comment "x"\n')
        assert added[0]["add"]["rule"]["comment"] == "x" and added[0]["add"]["rule"]["handle"] > 0
        nft.run(f"delete rule inet primo_t c handle {added[0]['add']['rule']['handle']}\n")
        assert "192.0.2.1" not in nft.run("list chain inet primo_t c")


@pytest.mark.root
def test_errors_carry_nfts_own_text(netns_factory: Callable[..., str]) -> None:
    with Nft(netns_factory()) as nft:
        with pytest.raises(EmuError, match="No such file or directory"):
            nft.run("list table inet primo_none")
        with pytest.raises(EmuError, match="syntax error"):
            nft.run("add table inet primo_t {{{\n")
        with pytest.raises(EmuError, match="No such file or directory"):
            nft.json({"nftables": [{"list": {"table": {"family": "inet", "name": "primo_none"}}}]})
        # a batch is one transaction: the error undoes the first command
        with pytest.raises(EmuError):
            nft.run("add table inet primo_t\ndelete table inet primo_none\n")
        assert "primo_t" not in nft.run("list tables")
    with pytest.raises(EmuError, match="closed"):
        nft.run("list tables")
    nft.close()


@pytest.mark.root
def test_commands_act_in_the_namespace_whatever_thread_runs_them(netns_factory: Callable[..., str]) -> None:
    ours, other = netns_factory("a"), netns_factory("b")
    nft = Nft(ours)
    try:
        with esys.in_netns(other):  # the calling thread elsewhere: the command still acts in `ours`
            nft.run("add table inet primo_t\n")
        with Nft(other) as elsewhere:
            assert "primo_t" not in elsewhere.run("list tables")
        assert "primo_t" in nft.run("list tables")

        errors: list[BaseException] = []

        def add_chains(worker: int) -> None:
            try:
                for i in range(25):
                    nft.run(f"add chain inet primo_t c{worker}_{i}\n")
            except EmuError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=add_chains, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(nft.list_json("chains inet")) == 100
    finally:
        nft.close()
