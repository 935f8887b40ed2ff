"""GENI AM API / Common Federation API / ProtoGENI response codes.

One table: every expected error maps to one of these codes and is returned inside the GENI
envelope (``{code: {geni_code, am_type, am_code}, value, output}``), never as an XML-RPC Fault.
The ProtoGENI CM uses the same numbers 0–17; 24–30 are its mapping failures; 100 is
"not implemented".
"""

from __future__ import annotations

from enum import IntEnum


class GeniCode(IntEnum):
    SUCCESS = 0
    BADARGS = 1
    ERROR = 2
    FORBIDDEN = 3
    BADVERSION = 4
    SERVERERROR = 5
    TOOBIG = 6
    REFUSED = 7
    TIMEDOUT = 8
    DBERROR = 9
    RPCERROR = 10
    UNAVAILABLE = 11
    SEARCHFAILED = 12
    UNSUPPORTED = 13
    BUSY = 14
    EXPIRED = 15
    INPROGRESS = 16
    ALREADYEXISTS = 17
    MISSINGARGS = 18
    OUTOFRANGE = 19
    CREDENTIAL_INVALID = 20
    CREDENTIAL_EXPIRED = 21
    CREDENTIAL_MISMATCH = 22
    CREDENTIAL_SIGNER_UNTRUSTED = 23
    VLAN_UNAVAILABLE = 24
    INSUFFICIENT_BANDWIDTH = 25
    INSUFFICIENT_NODES = 26
    NOT_IMPLEMENTED = 100


__all__ = ["GeniCode"]
