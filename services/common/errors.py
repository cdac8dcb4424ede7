"""Typed domain errors and their single mapping to a rich gRPC status.

Domain code raises these and never imports grpc. `status_for` turns one into a
`google.rpc.Status` with an `ErrorInfo` (stable `reason`) and, for bad input, a `BadRequest`
with one field violation per problem. `DomainErrorInterceptor` applies it to every RPC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ERROR_DOMAIN = "debate-engine"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    """Base of every error a servicer turns into a status. `code` is a grpc.StatusCode name.

    `details` are extra protobuf messages for the status (a servicer adds them, e.g. the judge's
    BilledCalls); `status_for` packs them after the ErrorInfo, and a client reads them back with
    `grpc_errors.status_details`.
    """

    code = "INTERNAL"
    reason = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = dict(metadata or {})
        self.details: list[Any] = []


class InvalidArgument(DomainError):
    code = "INVALID_ARGUMENT"
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], message: str | None = None, **kwargs: Any):
        self.violations = list(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(message or f"invalid request: {summary}", **kwargs)


class NotFound(DomainError):
    code = "NOT_FOUND"
    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = "ALREADY_EXISTS"
    reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    code = "FAILED_PRECONDITION"
    reason = "FAILED_PRECONDITION"


class OutOfRange(DomainError):
    code = "OUT_OF_RANGE"
    reason = "OUT_OF_RANGE"


class ResourceExhausted(DomainError):
    code = "RESOURCE_EXHAUSTED"
    reason = "RESOURCE_EXHAUSTED"


class PermissionDenied(DomainError):
    code = "PERMISSION_DENIED"
    reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    code = "UNAUTHENTICATED"
    reason = "UNAUTHENTICATED"


class Unavailable(DomainError):
    code = "UNAVAILABLE"
    reason = "UNAVAILABLE"


class DeadlineExceeded(DomainError):
    code = "DEADLINE_EXCEEDED"
    reason = "DEADLINE_EXCEEDED"


class Aborted(DomainError):
    code = "ABORTED"
    reason = "ABORTED"


@dataclass
class Violations:
    """Collects field violations so a validator reports every problem at once."""

    items: list[FieldViolation] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        self.items.append(FieldViolation(field_path, description))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, message: str | None = None) -> None:
        if self.items:
            raise InvalidArgument(self.items, message)
