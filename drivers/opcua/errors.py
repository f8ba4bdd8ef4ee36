"""OPC UA failures sorted by what the caller can do about them (:class:`OpcUaError`)."""

from __future__ import annotations

import asyncio

from asyncua import ua

#: what :attr:`OpcUaError.kind` can be
ERROR_KINDS = ("disconnected", "timeout", "security", "auth", "node", "protocol")

_S = ua.StatusCodes
_AUTH_CODES = frozenset({
    _S.BadUserAccessDenied, _S.BadIdentityTokenInvalid, _S.BadIdentityTokenRejected,
    _S.BadUserSignatureInvalid,
})
_SECURITY_CODES = frozenset({
    _S.BadSecurityChecksFailed, _S.BadCertificateInvalid, _S.BadCertificateUntrusted,
    _S.BadSecurityPolicyRejected, _S.BadSecurityModeRejected, _S.BadCertificateUriInvalid,
    _S.BadCertificateHostNameInvalid, _S.BadCertificateTimeInvalid, _S.BadApplicationSignatureInvalid,
    _S.BadNonceInvalid,
})
_NODE_CODES = frozenset({
    _S.BadNodeIdUnknown, _S.BadNodeIdInvalid, _S.BadNoMatch, _S.BadBrowseNameInvalid,
    _S.BadAttributeIdInvalid,
})
_TIMEOUT_CODES = frozenset({_S.BadTimeout, _S.BadRequestTimeout})
_DISCONNECT_CODES = frozenset({
    _S.BadSessionIdInvalid, _S.BadSessionClosed, _S.BadConnectionClosed, _S.BadServerHalted,
    _S.BadShutdown, _S.BadSecureChannelClosed, _S.BadCommunicationError, _S.BadNotConnected,
    _S.BadServerNotConnected, _S.BadSecureChannelIdInvalid, _S.BadNoSubscription,
    _S.BadSubscriptionIdInvalid, _S.BadTooManySessions,
})


class OpcUaError(Exception):
    """An OPC UA operation that did not deliver.

    ``kind``: disconnected, timeout, security, auth, node, protocol.
    """

    def __init__(self, kind: str, detail: str):
        if kind not in ERROR_KINDS:
            raise ValueError(f"kind: {kind!r} is not one of {', '.join(ERROR_KINDS)}")
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def _classify(e: BaseException, what: str) -> OpcUaError:
    """An asyncua/OS exception as an :class:`OpcUaError` of the right kind."""
    if isinstance(e, OpcUaError):
        return e
    if isinstance(e, ua.UaStatusCodeError):
        code = e.code
        name = ua.StatusCode(code).name
        if code in _AUTH_CODES:
            kind = "auth"
        elif code in _SECURITY_CODES:
            kind = "security"
        elif code in _NODE_CODES:
            kind = "node"
        elif code in _TIMEOUT_CODES:
            kind = "timeout"
        elif code in _DISCONNECT_CODES:
            kind = "disconnected"
        else:
            kind = "protocol"
        return OpcUaError(kind, f"{what}: {name} (0x{code:08X})")
    if isinstance(e, TimeoutError):
        return OpcUaError("timeout", f"{what}: no answer within the timeout")
    if isinstance(e, ConnectionError | OSError | EOFError | asyncio.IncompleteReadError):
        return OpcUaError("disconnected", f"{what}: {e!r}")
    if isinstance(e, ua.UaError):
        text = str(e)
        if "certificate" in text.lower() or "endpoint" in text.lower() or "polic" in text.lower():
            return OpcUaError("security", f"{what}: {text}")
        return OpcUaError("protocol", f"{what}: {text}")
    return OpcUaError("protocol", f"{what}: {e!r}")
