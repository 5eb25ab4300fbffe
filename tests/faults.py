"""Fault injection on real clients for consumer tests.

``KinesisFaults``: botocore event hooks on a real client (kinesalite) that answer
GetRecords with ExpiredIteratorException, ProvisionedThroughputExceededException,
HTTP 500 or a slow answer, as scheduled. kinesalite never throttles and its
iterators live 300 s, so these faults must be made by hand. In-memory doubles
(FakeKinesis, FakeS3, ...) are in ``tests/fakes.py``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import EndpointConnectionError


class KinesisFaults:
    """Scheduled GetRecords faults on a real boto3 Kinesis client (botocore hooks).

    ``schedule`` maps the n-th GetRecords call (1-based) to a fault: "expired",
    "throttled", "500", "conn", or ("slow", seconds). Returning a response from a
    ``before-call`` handler short-circuits the HTTP request, like a real answer.
    """

    def __init__(self, client: Any, schedule: dict[int, Any]):
        self.schedule = dict(schedule)
        self.calls = 0
        self.injected: list[Any] = []
        self._lock = threading.Lock()
        client.meta.events.register("before-call.kinesis.GetRecords", self._before)

    def _before(self, **kwargs: Any) -> Any:
        with self._lock:
            self.calls += 1
            fault = self.schedule.pop(self.calls, None)
        if fault is None:
            return None
        self.injected.append(fault)
        if isinstance(fault, tuple) and fault[0] == "slow":
            time.sleep(fault[1])
            return None
        if fault == "conn":
            raise EndpointConnectionError(endpoint_url="http://injected")
        codes = {"expired": ("ExpiredIteratorException", 400),
                 "throttled": ("ProvisionedThroughputExceededException", 400),
                 "500": ("InternalFailure", 500)}
        code, status = codes[fault]
        return (_FakeHttp(status), {"Error": {"Code": code, "Message": f"injected {code}"},
                                    "ResponseMetadata": {"HTTPStatusCode": status}})


@dataclass
class _FakeHttp:
    status_code: int
    headers: dict = field(default_factory=dict)
    content: bytes = b""
