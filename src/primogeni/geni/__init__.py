"""The GENI protocol layer: URNs, certificates (GIDs), signed credentials, RSpecs, XML-RPC values.

Pure cores: everything here takes data and returns data (no sockets, no database). The services
(:mod:`primogeni.ch`, :mod:`primogeni.am`) and the HTTPS transport (:mod:`primogeni.rpc`) build on it.
"""
