"""GENI RSpec v3 with the PrimoGENI extension: pure data in, XML out, and back.

- :mod:`.model` — the values (frozen dataclasses): advertisement ``AdNode``/``AdLink``,
  request ``Request``/``ReqNode``/``ReqLink``/``VirtualModel``, manifest ``ManNode``/``ManLink``.
- :mod:`.advert`, :mod:`.manifest` — write advertisements and manifests.
- :mod:`.request` — :func:`parse_request` (strict where PrimoGENI cares, lenient about foreign
  extensions) and :func:`request_rspec` (write one, for clients and tests).
- :mod:`.validate` — XSD validation against the GENI core schemas plus ours (package data).
- :mod:`.xmlio` — the safe parser (no DTD, no entities, no network, 4 MiB) and writing helpers.

The extension (namespace :data:`NS_PRIMO`, prefix ``primo``) is described in docs/RSPEC.md.

    >>> from primogeni.geni.rspec import parse_request
    >>> req = parse_request('<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request">'
    ...                     '<node client_id="h1"><sliver_type name="emulated-host"/></node></rspec>')
    >>> req.nodes[0].client_id, req.nodes[0].sliver_type
    ('h1', 'emulated-host')
"""

from primogeni.geni.rspec.advert import advertisement
from primogeni.geni.rspec.manifest import manifest
from primogeni.geni.rspec.model import (
    DEFAULT_SLIVER_TYPE,
    HARDWARE_TYPES,
    MODEL_FORMATS,
    NS_PRIMO,
    NS_RSPEC,
    SLIVER_EMULATED_HOST,
    SLIVER_SIMULATOR,
    SLIVER_TYPES,
    AdInterface,
    AdLink,
    AdNode,
    LinkProperty,
    Location,
    Login,
    ManInterface,
    ManLink,
    ManNode,
    NodeUsage,
    ReqInterface,
    ReqIp,
    ReqLink,
    ReqNode,
    Request,
    VirtualModel,
)
from primogeni.geni.rspec.request import parse_request, request_rspec
from primogeni.geni.rspec.validate import validate
from primogeni.geni.rspec.xmlio import MAX_RSPEC_BYTES

__all__ = [
    "DEFAULT_SLIVER_TYPE",
    "HARDWARE_TYPES",
    "MAX_RSPEC_BYTES",
    "MODEL_FORMATS",
    "NS_PRIMO",
    "NS_RSPEC",
    "SLIVER_EMULATED_HOST",
    "SLIVER_SIMULATOR",
    "SLIVER_TYPES",
    "AdInterface",
    "AdLink",
    "AdNode",
    "LinkProperty",
    "Location",
    "Login",
    "ManInterface",
    "ManLink",
    "ManNode",
    "NodeUsage",
    "ReqInterface",
    "ReqIp",
    "ReqLink",
    "ReqNode",
    "Request",
    "VirtualModel",
    "advertisement",
    "manifest",
    "parse_request",
    "request_rspec",
    "validate",
]
