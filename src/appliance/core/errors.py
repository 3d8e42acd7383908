"""The error contract shared by every transport.

Each error carries a :class:`Status`; REST maps it to an HTTP status and gRPC to a status code, in one table
each (``rest/app.py`` and ``grpc/service.py``), so both transports always agree.
"""

from __future__ import annotations

import enum


class Status(enum.Enum):
    """What went wrong, independent of transport. The value, the name in lower case, is the metrics ``reason``
    label."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    QUEUE_FULL = "queue_full"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    CANCELLED = "cancelled"
    TOO_LARGE = "too_large"
    ALREADY_EXISTS = "already_exists"
    UNSUPPORTED = "unsupported"
    PERMISSION_DENIED = "permission_denied"
    UNAUTHENTICATED = "unauthenticated"
    RATE_LIMITED = "rate_limited"
    CONFLICT = "conflict"
    INTERNAL = "internal"


class InferenceError(Exception):
    """An error with a message meant for the client."""

    status: Status = Status.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(InferenceError):
    status = Status.INVALID_ARGUMENT


class NotFound(InferenceError):
    status = Status.NOT_FOUND


class Unavailable(InferenceError):
    status = Status.UNAVAILABLE


class AlreadyExists(InferenceError):
    status = Status.ALREADY_EXISTS


class Unsupported(InferenceError):
    status = Status.UNSUPPORTED


class PermissionDenied(InferenceError):
    status = Status.PERMISSION_DENIED


class Unauthenticated(InferenceError):
    """No valid credentials: missing, malformed, unknown, revoked or expired. The message never says which."""

    status = Status.UNAUTHENTICATED


class RateLimited(InferenceError):
    """The caller's key is over its rate limit; it may try again after ``retry_after_s`` whole seconds."""

    status = Status.RATE_LIMITED

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Conflict(InferenceError):
    """The request clashes with the server's state: a name a model and a route both claim, a canary action with
    no canary running."""

    status = Status.CONFLICT


# Triton's own texts for a model or version that cannot serve (its model_repository_manager and model_lifecycle):
# tools and client code match on them.


def unknown_model(name: str) -> NotFound:
    return NotFound(f"Request for unknown model: '{name}' is not found")


def unknown_version(name: str, version: str) -> NotFound:
    return NotFound(f"Request for unknown model: '{name}' version {version} is not found")


def no_available_versions(name: str, why: str) -> Unavailable:
    return Unavailable(f"Request for unknown model: '{name}' has no available versions ({why})")


def version_not_ready(name: str, version: str, why: str) -> Unavailable:
    return Unavailable(f"Request for unknown model: '{name}' version {version} is not at ready state ({why})")


class QueueFull(InferenceError):
    status = Status.QUEUE_FULL


class DeadlineExceeded(InferenceError):
    status = Status.DEADLINE_EXCEEDED


class Cancelled(InferenceError):
    status = Status.CANCELLED


class TooLarge(InferenceError):
    status = Status.TOO_LARGE


class InternalError(InferenceError):
    status = Status.INTERNAL
