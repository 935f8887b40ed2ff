"""``primo agent``: the node agent as a running service — its RPC face, its threads, its registration.

:class:`AgentService` wires the parts of one physical node's agent together:

* the :class:`~primogeni.agent.store.Store` (desired state on disk) and the realizer that makes it
  real (``agent.realize.Realizer`` unless one is given);
* the :class:`~primogeni.agent.events.EventScheduler` and the :class:`~primogeni.agent.vsys.VsysServer`;
* an :class:`~primogeni.rpc.RpcServer` serving ``/primo/agent/1`` (XML-RPC over mutual TLS, the
  same server as the AM's) to the AM only: the caller's certificate must chain to a trusted root
  and carry ``config.am_urn`` (or, when that is not set, a ``…+authority+cm`` URN);
* a registration thread that calls ``Register`` on the AM's registry (``config.registry_url``)
  until it succeeds, then every ``register_interval`` seconds as a heartbeat.

Every method answers a GENI envelope ``{code, value, output}``; a malformed argument is BADARGS
naming the field, a kernel failure is ERROR with its reason. ``ProvisionMany`` and ``ReleaseMany``
take many slivers and links in one call (one realizer pass) and answer per item, a failed item
with its reason. :meth:`AgentService.stop` ends the threads and the server but leaves the
slivers running: an agent restart does not disturb them, and the next start reconciles the
kernel with the store. :func:`run_agent` is ``primo agent``'s blocking main.
"""

from __future__ import annotations

import contextlib
import http.client
import inspect
import logging
import signal
import threading
import xmlrpc.client
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from primogeni.agent.config import AGENT_PATH, AgentConfig
from primogeni.agent.events import EventScheduler
from primogeni.agent.realize import Realizer
from primogeni.agent.realize_links import vsys_dir
from primogeni.agent.service_util import _failure, _overlap, _parse, node_facts, results_wire, xmlrpc_safe
from primogeni.agent.spec import EventSpec, LinkSpec, SliverSpec, SpecError
from primogeni.agent.store import Store, StoreError
from primogeni.agent.vsys import VsysServer
from primogeni.emu.features import Features
from primogeni.errors import EmuError, PrimoError
from primogeni.geni.cert import Gid, TrustStore
from primogeni.geni.codes import GeniCode
from primogeni.geni.errors import GeniError, need
from primogeni.geni.urn import Urn
from primogeni.rpc import RpcServer, client, envelope

log = logging.getLogger(__name__)

RETRY_INTERVAL = 3.0  # seconds between registration attempts until one succeeds
_STRIPES = 64


class RealizerApi(Protocol):
    """What the service needs of ``agent.realize.Realizer`` (see docs/SUBSTRATE.md)."""

    @property
    def features(self) -> Any: ...  # what the kernel offers: emu.features.Features (a mapping in tests)

    def setup(self) -> None: ...
    def ensure_sliver(self, spec: SliverSpec) -> None: ...
    def remove_sliver(self, urn: str) -> None: ...
    def ensure_link(self, spec: LinkSpec) -> None: ...
    def remove_link(self, urn: str) -> None: ...
    # Optional (``agent.realize.Realizer`` has them): many at once; one by one without them.
    # def try_slivers(self, specs: Sequence[SliverSpec]) -> dict[str, EmuError]  (urn -> why it failed)
    # def remove_slivers(self, urns: Sequence[str]) -> None
    # def remove_links(self, urns: Sequence[str]) -> None
    # def simulation(self, urn: str) -> dict[str, Any]  (a simulator sliver's run: the Results method)
    def set_link_state(self, urn: str, up: bool) -> None: ...
    def start_sliver(self, urn: str) -> None: ...
    def stop_sliver(self, urn: str) -> None: ...
    def reboot(self, urn: str) -> None: ...
    def run_command(self, urn: str, argv: Sequence[str]) -> int: ...
    def stop_command(self, urn: str, argv: Sequence[str]) -> int: ...
    def vsys_setup_link(self, sliver_urn: str, label: str, remote: str, key: int) -> None: ...
    def vsys_delete_link(self, sliver_urn: str, label: str) -> None: ...
    def status(self, urn: str) -> str | None: ...
    def reconcile(self) -> dict[str, list[str]]: ...
    def monitor(self) -> dict[str, Any]: ...
    def teardown(self) -> None: ...
    def warnings(self, urn: str) -> list[str]: ...


class AgentApi:
    """The ``/primo/agent/1`` route: authorises the caller, checks arguments, calls the service."""

    def __init__(self, service: AgentService):
        self.service = service
        self._methods: dict[str, Callable[..., object]] = {
            "GetVersion": service.get_version, "ProvisionSliver": service.provision_sliver,
            "ProvisionLink": service.provision_link, "Start": service.start_sliver, "Stop": service.stop_sliver,
            "Release": service.release, "Status": service.status, "Monitor": service.monitor,
            "Event": service.event, "Reconcile": service.reconcile,
            "ProvisionMany": service.provision_many, "ReleaseMany": service.release_many,
            "Results": service.results,
        }

    def authorised(self, caller: Gid) -> bool:
        """Only the AM: ``config.am_urn`` exactly, or any ``…+authority+cm`` when that is not set."""
        am_urn = self.service.config.am_urn
        if am_urn is not None:
            return caller.urn == Urn.parse(am_urn)
        return caller.urn.type == "authority" and caller.urn.name == "cm"

    def __call__(self, method: str, params: tuple[Any, ...], caller: Gid) -> object:
        if not self.authorised(caller):
            log.warning("refused %s from %s: only the aggregate manager may call the agent", method[:80],
                        caller.urn)
            raise GeniError(GeniCode.FORBIDDEN, f"{caller.urn} may not call this node agent (only its AM may)")
        fn = self._methods.get(method)
        if fn is None:
            raise GeniError(GeniCode.UNSUPPORTED, f"the node agent has no method {method[:80]!r}")
        try:
            inspect.signature(fn).bind(*params)
        except TypeError:
            raise GeniError(GeniCode.BADARGS, f"{method}: wrong number of arguments ({len(params)})") from None
        try:
            value = fn(*params)
        except SpecError as exc:
            raise GeniError(GeniCode.BADARGS, str(exc)) from None
        except (StoreError, EmuError, OSError) as exc:
            log.warning("%s failed: %s", method, exc)
            raise GeniError(GeniCode.ERROR, f"{method}: {exc}") from None
        return envelope(xmlrpc_safe(value))


class AgentService:
    """One physical node's agent (see the module docstring). Start once, stop once."""

    def __init__(self, config: AgentConfig, *, realizer: RealizerApi | None = None, store: Store | None = None):
        self.config = config
        self.trust = TrustStore.from_dir(config.trust_dir)
        if not self.trust.roots:
            raise EmuError("no trusted root certificates (*.pem)", str(config.trust_dir))
        config.state_dir.mkdir(parents=True, exist_ok=True)
        # A realizer given from outside must share the service's store (pass the one it was built with).
        self.store = store if store is not None else Store(config.state_dir)
        self._own: Realizer | None = None  # the realizer we made (and close on stop)
        if realizer is None:
            realizer = self._own = Realizer(
                node=config.node, state_dir=config.state_dir, underlay_dev=config.underlay_dev,
                underlay_ip=config.underlay_ip, store=self.store, ctl_subnet=config.ctl_subnet,
                experimental_pool=config.experimental_pool)
        self.realizer: RealizerApi = realizer
        self.scheduler = EventScheduler(self.store, self.realizer)
        self.vsys = VsysServer(self.store, self.realizer)
        self.api = AgentApi(self)
        self.server = RpcServer({AGENT_PATH: self.api}, identity_cert=config.cert, identity_key=config.key,
                                trust=self.trust, host=config.listen_host, port=config.listen_port)
        self.url = config.url(self.server.address[1])
        self.registrations = 0  # successful Register calls so far
        self._admit = threading.Lock()  # slot/port/slice checks and the store write that follows, atomically
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]  # one operation at a time per URN
        self._stopping = threading.Event()
        self._registrar: threading.Thread | None = None
        self._started = False

    def _lock(self, urn: str) -> threading.Lock:
        return self._stripes[zlib.crc32(urn.encode("utf-8", "surrogateescape")) % _STRIPES]

    # -- life cycle

    def start(self) -> None:
        """Set the node up, reconcile, start events, vsys, the RPC server and registration."""
        if self._started:
            raise RuntimeError("agent already started")
        self._started = True
        self.realizer.setup()
        report = self.realizer.reconcile()
        log.info("agent %s: reconciled: %s", self.config.node,
                 ", ".join(f"{len(v)} {k}" for k, v in report.items()) or "nothing to do")
        self.scheduler.start()
        self.vsys.start()
        for spec in self.store.slivers().values():
            self.vsys.add_sliver(spec, vsys_dir(self.config.state_dir, spec.slot))
        self.server.start()
        log.info("agent %s (%s) serving %s", self.config.node, self.config.kind, self.url)
        if self.config.registry_url is not None:
            self._registrar = threading.Thread(target=self._register_loop, name="agent-register", daemon=True)
            self._registrar.start()

    def stop(self) -> None:
        """Stop the threads and the server; the slivers keep running."""
        self._stopping.set()
        if self._registrar is not None:
            self._registrar.join(timeout=30)
        self.server.stop()
        self.scheduler.stop()
        self.vsys.stop()
        if self._own is not None:
            self._own.close()  # its descriptors and reaper thread; the kernel objects stay
            self._own = None
        log.info("agent %s stopped (slivers left running)", self.config.node)

    def __enter__(self) -> AgentService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- registration

    def registration(self) -> dict[str, Any]:
        """The ``Register`` argument: who this agent is and where to reach it."""
        value: dict[str, Any] = xmlrpc_safe({
            "node": self.config.node, "kind": self.config.kind, "url": self.url, "underlay": self.config.underlay_ip,
            "capacity": self.config.capacity, "facts": self.facts(), "features": self.features(),
        })
        return value

    def register(self) -> None:
        """One ``Register`` call on the registry; raises on any failure."""
        assert self.config.registry_url is not None
        proxy = client(self.config.registry_url, cert=self.config.cert, key=self.config.key, trust=self.trust,
                       timeout=10.0)
        with proxy:
            answer = proxy.Register(self.registration())
        code = answer.get("code", {}).get("geni_code") if isinstance(answer, dict) else None
        if code != 0:
            output = answer.get("output", "") if isinstance(answer, dict) else repr(answer)[:200]
            raise EmuError(f"Register answered code {code}: {output}", self.config.registry_url)

    def _register_loop(self) -> None:
        failing = False
        while not self._stopping.is_set():
            try:
                self.register()
            except (OSError, xmlrpc.client.Error, http.client.HTTPException, PrimoError) as exc:
                # Logged once per run of failures (then at debug level): the AM may simply not be up yet.
                (log.debug if failing else log.warning)("agent %s: cannot register with %s: %s",
                                                        self.config.node, self.config.registry_url, exc)
                failing = True
                wait = min(RETRY_INTERVAL, self.config.register_interval)
            else:
                if failing or self.registrations == 0:
                    log.info("agent %s registered with %s", self.config.node, self.config.registry_url)
                failing = False
                self.registrations += 1
                wait = self.config.register_interval
            self._stopping.wait(wait)

    # -- what the agent knows about its node

    def facts(self) -> dict[str, Any]:
        return node_facts(self.config.state_dir, self.config.underlay_dev, self.config.underlay_ip)

    def features(self) -> dict[str, Any]:
        """What this kernel offers (the realizer probed it) as a struct: ``{vxlan: true, netem: false, …}``."""
        found = self.realizer.features
        if isinstance(found, Features):
            return found.as_dict()
        if isinstance(found, Mapping):
            return dict(found)
        raise EmuError(f"the realizer reports features as {type(found).__name__}, not a struct")

    # -- the RPC methods (AgentApi calls these; arguments are as they came off the wire)

    def get_version(self) -> dict[str, Any]:
        return {"node": self.config.node, "kind": self.config.kind, "underlay": self.config.underlay_ip,
                "url": self.url, "features": self.features(), "facts": self.facts(),
                "capacity": self.config.capacity}

    def provision_sliver(self, data: object) -> dict[str, Any]:
        spec = SliverSpec.from_dict(need(data, dict, "sliver spec"))
        with self._lock(spec.urn):
            with self._admit:
                self._check_admission(spec)
                self.store.put_sliver(spec)
            self.realizer.ensure_sliver(spec)
            self.vsys.add_sliver(spec, vsys_dir(self.config.state_dir, spec.slot))
            return {"urn": spec.urn, "state": self._state(spec.urn)}

    def _check_admission(self, spec: SliverSpec) -> None:
        for other in self.store.slivers().values():
            if other.urn == spec.urn:
                continue
            if other.slot == spec.slot:
                raise SpecError(f"sliver {spec.urn}: slot {spec.slot} is held by {other.urn}")
            if _overlap(other.ports, spec.ports):
                raise SpecError(f"sliver {spec.urn}: ports {spec.ports[0]}-{spec.ports[1]} overlap those of "
                                f"{other.urn}")
            if self.config.kind == "shared" and other.slice_urn == spec.slice_urn:
                raise GeniError(GeniCode.REFUSED, f"slice {spec.slice_urn} already has sliver {other.urn} on "
                                                  f"shared node {self.config.node} (one per slice)")

    def provision_link(self, data: object) -> dict[str, Any]:
        spec = LinkSpec.from_dict(need(data, dict, "link spec"))
        with self._lock(spec.urn):
            self.store.put_link(spec)
            self.realizer.ensure_link(spec)
            return {"urn": spec.urn, "state": self._state(spec.urn)}

    def _state(self, urn: str) -> str:
        return self.realizer.status(urn) or "failed"

    def _held_sliver(self, urn: object) -> str:
        text = need(urn, str, "sliver urn")
        if self.store.get_sliver(text) is None:
            raise GeniError(GeniCode.SEARCHFAILED, f"no sliver {text[:200]} on node {self.config.node}")
        return str(text)

    def start_sliver(self, urn: object) -> str:
        text = self._held_sliver(urn)
        with self._lock(text):
            self._held_sliver(text)
            self.store.set_run_state(text, "started")
            self.realizer.start_sliver(text)
            return self._state(text)

    def stop_sliver(self, urn: object) -> str:
        text = self._held_sliver(urn)
        with self._lock(text):
            self._held_sliver(text)
            self.store.set_run_state(text, "stopped")
            self.realizer.stop_sliver(text)
            return self._state(text)

    def results(self, urn: object) -> dict[str, Any]:
        """A simulator sliver's simulation: ``{state, exit_code (when ended), log, files: {name: base64},
        omitted}`` (``SimRealizer.simulation``); SEARCHFAILED for an unknown sliver, BADARGS for another kind."""
        text = self._held_sliver(urn)
        with self._lock(text):
            spec = self.store.get_sliver(text)
            if spec is None:
                raise GeniError(GeniCode.SEARCHFAILED, f"no sliver {text[:200]} on node {self.config.node}")
            if spec.kind != "simulator":
                raise GeniError(GeniCode.BADARGS, f"sliver {text[:200]} is a {spec.kind[:40]}, not a simulator: "
                                                  "it has no simulation results")
            read: Callable[[str], dict[str, Any]] | None = getattr(self.realizer, "simulation", None)
            if read is None:
                raise GeniError(GeniCode.UNSUPPORTED, f"the agent of node {self.config.node} runs no simulations")
            return results_wire(read(text))

    def release(self, urn: object) -> bool:
        """Remove a sliver (its vsys links and FIFOs first) or a link; an unknown URN is fine."""
        text = str(need(urn, str, "urn"))
        with self._lock(text):
            if self.store.get_sliver(text) is not None:
                self.vsys.remove_sliver(text)
                for link in self.store.vsys_links(text):
                    self.realizer.vsys_delete_link(text, link.label)
                    self.store.drop_vsys_link(text, link.label)
                self.realizer.remove_sliver(text)
                self.store.drop_sliver(text)
                log.info("released sliver %s", text)
            elif self.store.get_link(text) is not None:
                self.realizer.remove_link(text)
                self.store.drop_link(text)
                log.info("released link %s", text)
        return True

    # -- batches: one call for many slivers and links (the AM's Provision and Delete of a slice)

    @contextlib.contextmanager
    def _locks(self, urns: Sequence[str]) -> Iterator[None]:
        """The locks of all ``urns``, taken in one order (two batches never wait for each other)."""
        stripes = sorted({zlib.crc32(u.encode("utf-8", "surrogateescape")) % _STRIPES for u in urns})
        with contextlib.ExitStack() as held:
            for index in stripes:
                held.enter_context(self._stripes[index])
            yield

    def provision_many(self, slivers: object, links: object) -> dict[str, str]:
        """Store every sliver and link, then realize the slivers, then the links.

        Answers ``{urn: state}``, or ``{urn: "<CODE>: <reason>"}`` for an item that was refused
        (admission: slot, ports, one sliver per slice on a shared node) or failed; a failed item
        does not stop the others. A malformed item makes the whole call BADARGS (nothing stored).
        """
        sliver_specs = [_parse(SliverSpec, d, f"slivers[{i}]") for i, d in enumerate(need(slivers, list, "slivers"))]
        link_specs = [_parse(LinkSpec, d, f"links[{i}]") for i, d in enumerate(need(links, list, "links"))]
        answer: dict[str, str] = {}
        with self._locks([s.urn for s in sliver_specs] + [s.urn for s in link_specs]):
            stored: list[SliverSpec] = []
            with self._admit:
                for spec in sliver_specs:
                    try:
                        self._check_admission(spec)
                        self.store.put_sliver(spec)
                    except (GeniError, EmuError, StoreError, OSError) as exc:
                        answer[spec.urn] = _failure("ProvisionMany", spec.urn, exc)
                    else:
                        stored.append(spec)
            stored_links: list[LinkSpec] = []
            for link in link_specs:
                try:
                    self.store.put_link(link)
                except (StoreError, OSError) as exc:
                    answer[link.urn] = _failure("ProvisionMany", link.urn, exc)
                else:
                    stored_links.append(link)
            batch: Callable[[Sequence[SliverSpec]], dict[str, EmuError]] | None = getattr(
                self.realizer, "try_slivers", None)
            failed: dict[str, EmuError] = batch(stored) if batch is not None and stored else {}
            for spec in stored:
                if spec.urn in failed:  # stays stored: reconcile or the AM retries
                    answer[spec.urn] = _failure("ProvisionMany", spec.urn, failed[spec.urn])
                    continue
                try:
                    if batch is None:
                        self.realizer.ensure_sliver(spec)
                    self.vsys.add_sliver(spec, vsys_dir(self.config.state_dir, spec.slot))
                    # the batch made and checked it just now: its state is the one asked for
                    answer[spec.urn] = self._state(spec.urn) if batch is None else (
                        "stopped" if self.store.run_state(spec.urn) == "stopped" else "ready")
                except (EmuError, StoreError, OSError) as exc:  # stays stored: reconcile or the AM retries
                    answer[spec.urn] = _failure("ProvisionMany", spec.urn, exc)
            for link in stored_links:
                try:
                    self.realizer.ensure_link(link)
                    answer[link.urn] = self._state(link.urn)
                except (EmuError, StoreError, OSError) as exc:
                    answer[link.urn] = _failure("ProvisionMany", link.urn, exc)
        return answer

    def release_many(self, urns: object) -> dict[str, str]:
        """Remove slivers (their vsys links first) and links, each kind in one realizer pass.

        Answers ``{urn: "released"}`` (also for a URN not held) or ``{urn: "<CODE>: <reason>"}``
        for one that could not be removed (it stays held, so that the AM can try again).
        """
        asked = need(urns, list, "urns")
        if not all(isinstance(u, str) for u in asked):
            raise GeniError(GeniCode.BADARGS, "urns must be a list of strings")
        answer = dict.fromkeys(asked, "released")
        with self._locks(asked):
            slivers, gone_links = [], []
            for urn in answer:
                if self.store.get_sliver(urn) is not None:
                    try:
                        self.vsys.remove_sliver(urn)
                        for link in self.store.vsys_links(urn):
                            self.realizer.vsys_delete_link(urn, link.label)
                            self.store.drop_vsys_link(urn, link.label)
                    except (EmuError, StoreError, OSError) as exc:
                        answer[urn] = _failure("ReleaseMany", urn, exc)
                    else:
                        slivers.append(urn)
                elif self.store.get_link(urn) is not None:
                    gone_links.append(urn)
            # links first, as the AM releases them: the reverse of provisioning
            self._remove_all(gone_links, "remove_links", self.realizer.remove_link, self.store.drop_link, answer)
            self._remove_all(slivers, "remove_slivers", self.realizer.remove_sliver, self.store.drop_sliver, answer)
        return answer

    def _remove_all(self, urns: list[str], batch_name: str, one: Callable[[str], None], drop: Callable[[str], None],
                    answer: dict[str, str]) -> None:
        """The realizer's batch removal of ``urns``; when it fails (or the realizer has none), one by one,
        so that each failure is told apart. What was removed leaves the store."""
        if not urns:
            return
        batch: Callable[[Sequence[str]], None] | None = getattr(self.realizer, batch_name, None)
        done: list[str] = []
        try:
            if batch is not None:
                batch(urns)
                done = urns
        except (EmuError, OSError) as exc:
            log.warning("%s of %d failed (%s); removing them one by one", batch_name, len(urns), exc)
        if not done:
            for urn in urns:
                try:
                    one(urn)
                except (EmuError, OSError) as exc:
                    answer[urn] = _failure("ReleaseMany", urn, exc)
                else:
                    done.append(urn)
        for urn in done:
            try:
                drop(urn)
            except (StoreError, OSError) as exc:
                answer[urn] = _failure("ReleaseMany", urn, exc)
            else:
                log.info("released %s", urn)

    def status(self, urns: object) -> dict[str, str]:
        """``{urn: state}`` of the URNs asked (all held when empty); URNs not held are left out."""
        asked = need(urns, list, "urns")
        if not all(isinstance(u, str) for u in asked):
            raise GeniError(GeniCode.BADARGS, "urns must be a list of strings")
        held = {**dict.fromkeys(self.store.slivers()), **dict.fromkeys(self.store.links())}
        wanted = list(held) if not asked else [u for u in asked if u in held]
        return {urn: self._state(urn) for urn in wanted}

    def monitor(self) -> dict[str, Any]:
        return self.realizer.monitor()

    def event(self, data: object) -> dict[str, Any]:
        spec = EventSpec.from_dict(need(data, dict, "event spec"))
        state = self.scheduler.submit(spec)
        answer: dict[str, Any] = {"event_id": spec.event_id, "state": state}
        if state == "failed":
            answer["detail"] = self.store.event_detail(spec.event_id)
        return answer

    def reconcile(self) -> dict[str, list[str]]:
        report = self.realizer.reconcile()
        log.info("reconcile on request: %s", {k: len(v) for k, v in report.items()})
        return report


def run_agent(config: AgentConfig, *, realizer: RealizerApi | None = None) -> int:
    """``primo agent``: run until SIGTERM or SIGINT; 0 after a clean stop, 1 if the agent cannot start."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            service = AgentService(config, realizer=realizer)
        except (PrimoError, OSError) as exc:
            log.error("agent %s cannot start: %s", config.node, exc)
            return 1
        try:
            service.start()
        except (PrimoError, OSError) as exc:
            log.error("agent %s cannot start: %s", config.node, exc)
            service.stop()
            return 1
        try:
            while not stop.wait(0.5):
                pass
            log.info("agent %s: stopping on signal", config.node)
        finally:
            service.stop()
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


__all__ = ["AgentApi", "AgentService", "RealizerApi", "node_facts", "run_agent", "vsys_dir", "xmlrpc_safe"]
