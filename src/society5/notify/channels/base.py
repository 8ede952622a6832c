"""What every channel receives and must do: send one message to one address, or say why not."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Outgoing:
    """One message to one recipient on one channel (already rendered in the recipient's language)."""

    delivery_id: str  # a UUID, stable across retries: the idempotency key receivers may use
    tenant: str
    recipient_id: str
    recipient_name: str
    address: str
    template: str
    lang: str
    title: str
    text: str
    html: str
    urgent: bool
    secret: str | None = None  # the recipient's webhook signing secret


class Channel(Protocol):
    """``send`` returns when the receiver accepted the message; otherwise it raises:

    ``outbox.Defer`` (try later, no attempt counted), ``outbox.GiveUp`` (never deliverable: escalate), or any
    other exception (a failed attempt: retried with backoff).
    """

    name: str

    def send(self, out: Outgoing) -> None: ...


@runtime_checkable
class BatchChannel(Protocol):
    """A channel that sends many messages at once (concurrently, over reused connections).

    ``send_many`` never raises for one message: it returns, in order, ``None`` for each message the receiver
    accepted and for the others the exception ``send`` would have raised. A channel without it is sent a
    batch one ``send`` at a time from a few threads."""

    name: str

    def send(self, out: Outgoing) -> None: ...

    def send_many(self, outs: Sequence[Outgoing]) -> list[Exception | None]: ...


def outcome_of(call: Callable[[Any], None], arg: Any) -> Exception | None:
    """``call(arg)`` as a batch reports it: None when it returned, else the exception it raised."""
    try:
        call(arg)
    except Exception as err:
        return err
    return None


def checked(check: Callable[[Any], None], answer: Any) -> Exception | None:
    """A receiver's answer to one message of a batch (or the exception that came instead) as a batch
    reports it, ``check`` deciding whether the answer was an acceptance."""
    return answer if isinstance(answer, Exception) else outcome_of(check, answer)
