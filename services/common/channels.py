"""Client channels for service-to-service calls.

Every channel retries UNAVAILABLE through gRPC's own retry policy (the call is re-sent only
when the server did not act on it, and every call that spends or records money carries an
idempotency key anyway).
"""

from __future__ import annotations

import json

import grpc

RETRY_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)

CHANNEL_OPTIONS = [
    ("grpc.service_config", RETRY_SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


def open_channel(address: str) -> grpc.aio.Channel:
    """An aio channel to another service of the suite."""
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
