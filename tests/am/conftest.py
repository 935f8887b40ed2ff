"""A small federation for AM tests: a root, an SA, an MA, the AM, users, and credentials.

Built once per session with real keys (RSA keygen is the slow part); each test gets its own
data directory and database.
"""

from __future__ import annotations

import shutil
import xmlrpc.client
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from primogeni.am.inventory import default_inventory_toml
from primogeni.am.service import AmService
from primogeni.geni.cert import Gid, Identity, create_root, issue
from primogeni.geni.cred import SLICE_PRIVILEGES, USER_PRIVILEGES, Credential, Privilege, issue_credential
from primogeni.geni.urn import Urn
from primogeni.rpc import client

NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass
class Federation:
    root: Identity
    sa: Identity
    ma: Identity
    am: Identity
    users: dict[str, Identity]
    other_root: Identity
    stranger: Identity  # a user of an untrusted federation
    base: Path

    def slice_gid(self, name: str, project: str = "proj") -> Gid:
        urn = Urn(f"primo:{project}", "slice", name)
        return issue(self.sa, urn, now=NOW, lifetime=timedelta(days=30), ca=False,
                     public_key=self.sa.key.public_key())

    def slice_cred(self, user: str, name: str, *, expires: datetime | None = None, signer: Identity | None = None,
                   project: str = "proj") -> Credential:
        expires = expires or NOW + timedelta(days=7)
        return issue_credential(signer or self.sa, self.users[user].gid, self.slice_gid(name, project),
                                [Privilege(p, True) for p in SLICE_PRIVILEGES], expires,
                                now=min(NOW, expires - timedelta(days=1)))

    def user_cred(self, user: str, *, expires: datetime | None = None) -> Credential:
        gid = self.users[user].gid
        expires = expires or NOW + timedelta(days=30)
        return issue_credential(self.ma, gid, gid, [Privilege(p, True) for p in USER_PRIVILEGES], expires,
                                now=min(NOW, expires - timedelta(days=1)))

    def files(self, user: str) -> tuple[Path, Path]:
        cert = self.base / f"{user}.pem"
        key = self.base / f"{user}.key"
        if not cert.exists():
            ident = self.users.get(user) or self.stranger
            ident.save(cert, key)
        return cert, key


@pytest.fixture(scope="session")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    base = tmp_path_factory.mktemp("federation")
    root = create_root(Urn("primo", "authority", "root"), now=NOW - timedelta(days=1))
    sa = issue(root, Urn("primo", "authority", "sa"), now=NOW - timedelta(days=1), lifetime=timedelta(days=3650),
               ca=True)
    ma = issue(root, Urn("primo", "authority", "ma"), now=NOW - timedelta(days=1), lifetime=timedelta(days=3650),
               ca=True)
    am = issue(root, Urn("primo", "authority", "cm"), now=NOW - timedelta(days=1), lifetime=timedelta(days=3650),
               ca=True, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    users = {name: issue(ma, Urn("primo", "user", name), now=NOW - timedelta(days=1), lifetime=timedelta(days=365),
                         ca=False, email=f"{name}@example.org") for name in ("alice", "bob")}
    other_root = create_root(Urn("elsewhere", "authority", "root"), now=NOW - timedelta(days=1))
    stranger = issue(other_root, Urn("elsewhere", "user", "mallory"), now=NOW - timedelta(days=1),
                     lifetime=timedelta(days=365), ca=False)
    return Federation(root, sa, ma, am, users, other_root, stranger, base)


def make_data_dir(fed: Federation, path: Path) -> Path:
    (path / "trusted_roots").mkdir(parents=True)
    (path / "am").mkdir()
    (path / "trusted_roots" / "primo-root.pem").write_text(fed.root.gid.pem(with_chain=False))
    fed.am.save(path / "am" / "am.pem", path / "am" / "am.key")
    (path / "am" / "inventory.toml").write_text(default_inventory_toml())
    return path


@pytest.fixture
def data_dir(federation: Federation, tmp_path: Path) -> Iterator[Path]:
    path = make_data_dir(federation, tmp_path / "data")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def am_service(data_dir: Path, db_url: str) -> Iterator[AmService]:
    service = AmService(data_dir, db_url=db_url, reap_interval=3600)
    service.start()
    try:
        yield service
    finally:
        service.stop()


def proxy(fed: Federation, url: str, user: str = "alice") -> xmlrpc.client.ServerProxy:
    cert, key = fed.files(user)
    return client(url, cert=cert, key=key)


def v3(cred: Credential | str) -> dict[str, str]:
    xml = cred if isinstance(cred, str) else cred.xml
    return {"geni_type": "geni_sfa", "geni_version": "3", "geni_value": xml}
