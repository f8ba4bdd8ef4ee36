"""InfluxDB v2 write API through influxdb-client (InfluxDB 2.x/3.x, Cloud; token, org, bucket).

The writer hands over line protocol it has already serialised and spooled; the client
posts it with the library's synchronous write API in a worker thread, with the
library's own retries off: the spool is the retry mechanism, so a batch is either
confirmed or kept on disk.
"""

from __future__ import annotations

import asyncio
import logging

import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from daq.storage.influx_v1 import InfluxError, classify, masked_url

log = logging.getLogger(__name__)


class InfluxV2Client:
    """Writes into one bucket."""

    def __init__(self, url: str, token: str, org: str, bucket: str, timeout_s: float = 10.0):
        self.url, self.org, self.bucket = url, org, bucket
        self._client = InfluxDBClient(url=url, token=token, org=org, timeout=int(timeout_s * 1000),
                                      retries=False)
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def _write(self, body: bytes) -> None:
        try:
            self._api.write(bucket=self.bucket, org=self.org, record=body,
                            write_precision=WritePrecision.NS)
        except ApiException as e:
            raise classify(e.status or 0, str(e.body or e.reason or "")[:500], "InfluxDB v2") from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            what = "timed out" if isinstance(e, urllib3.exceptions.TimeoutError | TimeoutError) else "unreachable"
            raise InfluxError(f"InfluxDB at {masked_url(self.url)} {what}: {type(e).__name__}: {e}",
                              "unreachable") from None

    async def write(self, body: bytes) -> None:
        """POST line protocol to ``/api/v2/write``. Raises :class:`InfluxError`."""
        await asyncio.to_thread(self._write, body)

    async def create_database(self, retention: str | None = None) -> None:
        """Buckets are created by whoever owns the InfluxDB organisation; nothing to do."""

    async def aclose(self) -> None:
        """Close the connection pool."""
        await asyncio.to_thread(self._client.close)
