"""OPC UA client driver over asyncua.

Node addressing and values (:mod:`.nodes`), errors (:mod:`.errors`), and the client with
its polled reads and data-change subscriptions (:mod:`.client`, whose docstring tells the
design).
"""

from drivers.opcua.client import (
    SECURITY_MODES,
    SECURITY_POLICIES,
    Drained,
    NodeSeries,
    OpcUaClient,
    OpcUaSettings,
    ReadResult,
    SubscriptionInfo,
)
from drivers.opcua.errors import ERROR_KINDS, OpcUaError
from drivers.opcua.nodes import (
    FLOAT_TYPES,
    INTEGER_TYPES,
    NODE_TYPES,
    OVERFLOW_BITS,
    OVERFLOW_MASK,
    NodeSpec,
    datetime_ns,
    format_browse_path,
    is_node_id,
    ns_datetime,
    parse_browse_path,
    status_overflow,
    status_quality,
)

__all__ = ["ERROR_KINDS", "FLOAT_TYPES", "INTEGER_TYPES", "NODE_TYPES", "OVERFLOW_BITS", "OVERFLOW_MASK",
           "SECURITY_MODES", "SECURITY_POLICIES", "Drained", "NodeSeries", "NodeSpec", "OpcUaClient", "OpcUaError",
           "OpcUaSettings", "ReadResult", "SubscriptionInfo", "datetime_ns", "format_browse_path", "is_node_id",
           "ns_datetime", "parse_browse_path", "status_overflow", "status_quality"]
