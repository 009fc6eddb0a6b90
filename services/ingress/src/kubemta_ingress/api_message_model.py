"""The JSON body of `POST /v1/messages`: what a caller may ask kubemta to compose (the OpenAPI schema).

Everything here is checked before a single header is written, so that a bad request
gets one 422 listing every problem in FastAPI's own shape (`loc`, `msg`, `type`).
api_message.py turns a valid `MessageRequest` into the message bytes and envelope;
api_message_fields.py holds the checks of single fields and the limits.

- Addresses (`from`, `to`, `cc`, `bcc`, `reply_to`) are objects `{"address": ..., "name": ...}`
  (the name is optional). An address is judged by `policy.check_address` with UTF-8
  allowed, so the API refuses exactly what the SMTP listeners refuse; a non-ASCII address
  makes the message an SMTPUTF8 one (RFC 6531).
- Extra `headers` may not set the fields kubemta writes itself or that only a receiving
  server may add (`RESERVED_HEADERS`): the error names the header.
- The recipient limit comes from the caller through the validation context
  (`parse_request(..., max_recipients=...)`, KUBEMTA_MAX_RECIPIENTS), like RCPT's limit.
- `dsn` asks for delivery status notifications as SMTP's NOTIFY, RET and ENVID do
  (RFC 3461), judged as SMTP judges them (api_dsn.py).
"""

from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from kubemta.v1 import message_pb2
from kubemta_ingress.api_dsn import MessageDsn, check_envid, check_notify, check_ret
from kubemta_ingress.api_message_fields import (
    DEFAULT_MAX_RECIPIENTS,
    MAX_ATTACHMENTS,
    MAX_FILENAME,
    MAX_HEADER_NAME,
    MAX_HEADERS,
    MAX_LINE,
    MAX_NAME,
    MAX_SUBJECT,
    MAX_TAGS,
    RESERVED_HEADERS,
    Address,
    Base64Content,
    DisplayName,
    Filename,
    HeaderText,
    InvalidMessage,
    Subject,
    check_body_text,
    check_content_id,
    check_content_type,
    check_header_name,
    check_message_id,
    check_tag,
    header_text_problem,
    request_errors,
)

__all__ = [
    "DEFAULT_MAX_RECIPIENTS",
    "MAX_ATTACHMENTS",
    "MAX_FILENAME",
    "MAX_HEADER_NAME",
    "MAX_HEADERS",
    "MAX_NAME",
    "MAX_SUBJECT",
    "MAX_TAGS",
    "RESERVED_HEADERS",
    "Attachment",
    "DsnRequest",
    "InvalidMessage",
    "Mailbox",
    "MessageRequest",
    "header_text_problem",
    "parse_request",
    "request_errors",
]


class Mailbox(BaseModel):
    """A mailbox: an address and an optional display name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: Address = Field(description="local-part@domain (RFC 5321); UTF-8 allowed (the message is then SMTPUTF8)")
    name: DisplayName | None = Field(
        default=None,
        description="Display name, any Unicode but control characters (RFC 2047-encoded when not ASCII)",
        examples=["Ada Lovelace"],
    )


class Attachment(BaseModel):
    """A file attached to the message, or an inline part of the HTML when it has a `content_id`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    filename: Filename = Field(
        description="File name shown to the reader: no path separators, no control or bidirectional characters",
        examples=["invoice-2026-12.pdf"],
    )
    content_type: Annotated[str, AfterValidator(check_content_type)] = Field(
        default="application/octet-stream",
        description="MIME type/subtype without parameters (not multipart/* or message/*)",
        examples=["application/pdf", "image/png"],
    )
    content: Base64Content = Field(description="The file's bytes, base64 (RFC 4648; whitespace ignored)")
    content_id: Annotated[str, AfterValidator(check_content_id)] | None = Field(
        default=None,
        description="Makes the part inline, referenced from `html` as cid:CONTENT_ID (needs `html`; without <>)",
        examples=["logo@example.com"],
    )


class DsnRequest(BaseModel):
    """Delivery status notifications (RFC 3461) the sender asks for, as SMTP's NOTIFY, RET and ENVID."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    notify: list[Literal["success", "failure", "delay", "never"]] | None = Field(
        default=None,
        min_length=1,
        description="When to report, for every recipient: `never` alone, or any of success, failure, delay. "
        "Default: failure and delay",
        examples=[["success", "failure"]],
    )
    ret: Literal["full", "hdrs"] | None = Field(
        default=None, description="What a failure report returns: the full message or its headers (default: hdrs)"
    )
    envid: Annotated[str, AfterValidator(check_envid)] | None = Field(
        default=None,
        description="An id of yours the reports carry (Original-Envelope-Id): printable ASCII, at most 100 "
        "characters once written as xtext (+, = and space take three)",
        examples=["invoice-42"],
    )

    @field_validator("notify")
    @classmethod
    def _notify_fits(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            check_notify(value)  # `never` with anything else
        return value

    def bus(self) -> MessageDsn:
        """What the request asks for, as the bus carries it."""
        return MessageDsn(
            notify=check_notify(self.notify) if self.notify is not None else None,
            ret=check_ret(self.ret) if self.ret is not None else message_pb2.DSN_RET_UNSPECIFIED,
            envid=self.envid or "",
        )


class MessageRequest(BaseModel):
    """A message for kubemta to compose and queue."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "from": {"address": "billing@example.com", "name": "Example Billing"},
                    "to": [{"address": "ada@example.org", "name": "Ada Lovelace"}],
                    "subject": "Your invoice",
                    "text": "Hello Ada,\n\nyour invoice is attached.\n",
                    "html": '<p>Hello Ada,</p><p>your invoice is attached.</p><img src="cid:logo@example.com">',
                    "attachments": [
                        {"filename": "invoice.pdf", "content_type": "application/pdf", "content": "JVBERi0xLjQK"},
                        {
                            "filename": "logo.png",
                            "content_type": "image/png",
                            "content": "iVBORw0KGgo=",
                            "content_id": "logo@example.com",
                        },
                    ],
                    "headers": {"List-Unsubscribe": "<https://example.com/unsubscribe/42>"},
                    "tags": ["invoice", "2026-12"],
                }
            ]
        },
    )

    from_: Mailbox = Field(alias="from", description="The author (From:); also the envelope sender by default")
    to: list[Mailbox] = Field(default_factory=list, description="To: recipients")
    cc: list[Mailbox] = Field(default_factory=list, description="Cc: recipients")
    bcc: list[Mailbox] = Field(default_factory=list, description="Blind recipients: in the envelope, never in a header")
    reply_to: Mailbox | None = Field(default=None, description="Reply-To: where answers should go")
    subject: Subject | None = Field(default=None, description="Subject: (RFC 2047-encoded when not ASCII)")
    text: Annotated[str, AfterValidator(check_body_text)] | None = Field(
        default=None, description="The plain text body (text and/or html is required)"
    )
    html: Annotated[str, AfterValidator(check_body_text)] | None = Field(
        default=None, description="The HTML body; with `text` the two are sent as multipart/alternative"
    )
    attachments: list[Attachment] = Field(
        default_factory=list, max_length=MAX_ATTACHMENTS, description=f"At most {MAX_ATTACHMENTS} attachments"
    )
    headers: dict[Annotated[str, AfterValidator(check_header_name)], HeaderText] = Field(
        default_factory=dict,
        max_length=MAX_HEADERS,
        description=(
            f"Extra header fields, name -> value (at most {MAX_HEADERS}). Not allowed: From, Sender, To, Cc, Bcc, "
            "Reply-To, Subject, Date, Message-ID, MIME-Version, Content-*, Received, Return-Path, DKIM-Signature, "
            "DomainKey-Signature, ARC-*, Authentication-Results, Received-SPF, Resent-*"
        ),
        examples=[{"List-Unsubscribe": "<https://example.com/unsubscribe/42>", "X-Campaign": "winter-2026"}],
    )
    tags: list[Annotated[str, AfterValidator(check_tag)]] = Field(
        default_factory=list,
        max_length=MAX_TAGS,
        description="Labels for events and webhooks, not written into the message: each 1..64 of [A-Za-z0-9._:-]",
        examples=[["invoice", "tenant:42"]],
    )
    envelope_from: Address | None = Field(
        default=None, description="The envelope sender (bounce address, MAIL FROM); default: the `from` address"
    )
    message_id: Annotated[str, AfterValidator(check_message_id)] | None = Field(
        default=None,
        description="Message-ID: as <id-left@id-right>; default: one kubemta makes",
        examples=["<invoice-42@example.com>"],
    )
    dsn: DsnRequest | None = Field(
        default=None, description="Delivery status notifications (RFC 3461 NOTIFY, RET, ENVID): default as SMTP's"
    )

    @field_validator("headers")
    @classmethod
    def _headers_fit(cls, value: dict[str, str]) -> dict[str, str]:
        seen: set[str] = set()
        for name, text in value.items():
            if name.lower() in seen:
                raise ValueError(f"header {name!r} is given twice (names are case-insensitive)")
            seen.add(name.lower())
            if len(name) + 2 + len(text.encode("utf-8")) > MAX_LINE:
                raise ValueError(f"header {name!r}: name and value take more than {MAX_LINE} octets (one line)")
        return value

    @model_validator(mode="after")
    def _complete(self, info: ValidationInfo) -> Self:
        limit = (info.context or {}).get("max_recipients", DEFAULT_MAX_RECIPIENTS)
        count = len(self.to) + len(self.cc) + len(self.bcc)
        if count == 0:
            raise ValueError("no recipients: give at least one address in `to`, `cc` or `bcc`")
        if count > limit:
            raise ValueError(f"{count} recipients in `to`, `cc` and `bcc`; at most {limit} are allowed")
        if self.text is None and self.html is None:
            raise ValueError("no body: give `text`, `html` or both")
        content_ids = [a.content_id.lower() for a in self.attachments if a.content_id is not None]
        if content_ids and self.html is None:
            raise ValueError("attachments with a `content_id` are inline parts of `html`, and there is no `html`")
        if len(set(content_ids)) != len(content_ids):
            raise ValueError("two attachments have the same `content_id`")
        return self

    def recipients(self) -> list[Mailbox]:
        """`to`, `cc` and `bcc` in that order."""
        return [*self.to, *self.cc, *self.bcc]


def parse_request(body: bytes | str, *, max_recipients: int) -> MessageRequest:
    """The request in a JSON body, with the recipient limit applied; raises pydantic's ValidationError."""
    return MessageRequest.model_validate_json(body, context={"max_recipients": max_recipients})
