"""What one load run is: the target, the call, ghz's flags (`LoadConfig`), and the channels they
describe.

The channels of a run each get their own subchannel pool (`grpc.use_local_subchannel_pool`),
so that `connections` of them really are separate HTTP/2 connections.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import grpc

from services.loadtest.report import RunOptions


@dataclass
class LoadConfig:
    target: str
    call: str
    data: str | None = None  # JSON text; may hold ghz call-template actions like {{.RequestNumber}}
    total: int = 200
    concurrency: int = 50
    duration: float = 0.0  # -z seconds; total is ignored when set
    max_duration: float = 0.0  # -x seconds; total is respected
    duration_stop: str = "close"
    rps: int = 0
    timeout: float = 20.0  # per call; 0 = none
    dial_timeout: float = 10.0
    keepalive: float = 0.0
    connections: int = 1
    insecure: bool = False
    cacert: str = ""
    cert: str = ""
    key: str = ""
    cname: str = ""
    authority: str = ""
    metadata: dict[str, str] | None = None
    protoset: str = ""
    name: str = ""
    tags: dict[str, str] | None = None
    skip_first: int = 0
    count_errors: bool = False
    enable_compression: bool = False
    # ghz's --stream-call-count / --stream-call-duration: the client ends a server stream
    # after this many messages or this long, and the call counts as OK.
    stream_call_count: int = 0
    stream_call_duration: float = 0.0
    # Request numbers of this run start here (a process of a multi-process run takes its
    # own range, so that {{.RequestNumber}} stays unique across processes).
    first_number: int = 0
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)

    def run_options(self, data: Any) -> RunOptions:
        return RunOptions(
            call=self.call,
            host=self.target,
            protoset=self.protoset,
            insecure=self.insecure,
            cacert=self.cacert,
            cert=self.cert,
            key=self.key,
            cname=self.cname,
            authority=self.authority,
            rps=self.rps,
            concurrency=self.concurrency,
            connections=self.connections,
            # ghz sets n to MaxInt32 when a duration is given (runner/options.go).
            total=2**31 - 1 if self.duration > 0 else self.total,
            duration_ns=int(self.duration * 1e9),
            timeout_ns=int(self.timeout * 1e9),
            dial_timeout_ns=int(self.dial_timeout * 1e9),
            keepalive_ns=int(self.keepalive * 1e9),
            data=data,
            metadata=self.metadata,
            cpus=self.cpus,
            name=self.name,
            skip_first=self.skip_first,
            count_errors=self.count_errors,
            enable_compression=self.enable_compression,
            tags=self.tags,
        )

    # --- channels --------------------------------------------------------------------------

    def _credentials(self) -> grpc.ChannelCredentials | None:
        if self.insecure:
            return None

        def read(path: str) -> bytes | None:
            if not path:
                return None
            with open(path, "rb") as f:
                return f.read()

        return grpc.ssl_channel_credentials(read(self.cacert), read(self.key), read(self.cert))

    def channel_options(self, separate: bool) -> list[tuple[str, Any]]:
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
        if separate:
            options.append(("grpc.use_local_subchannel_pool", 1))
        if self.cname:
            options.append(("grpc.ssl_target_name_override", self.cname))
        if self.authority:
            options.append(("grpc.default_authority", self.authority))
        if self.keepalive > 0:
            options.append(("grpc.keepalive_time_ms", int(self.keepalive * 1000)))
        return options

    def sync_channel(self) -> grpc.Channel:
        creds = self._credentials()
        if creds is None:
            return grpc.insecure_channel(self.target, options=self.channel_options(False))
        return grpc.secure_channel(self.target, creds, options=self.channel_options(False))

    def aio_channel(self) -> grpc.aio.Channel:
        creds = self._credentials()
        compression = grpc.Compression.Gzip if self.enable_compression else None
        if creds is None:
            return grpc.aio.insecure_channel(self.target, options=self.channel_options(True), compression=compression)
        return grpc.aio.secure_channel(self.target, creds, options=self.channel_options(True), compression=compression)
