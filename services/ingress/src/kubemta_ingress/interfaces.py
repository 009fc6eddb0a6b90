"""Typed interfaces of the ingress: the aiosmtpd handler hooks.

aiosmtpd types its handler as `Any` (aiosmtpd/smtp.py `_call_handler_hook`); this
Protocol names the hooks the ingress implements (aiosmtpd docs/handlers.rst). The
publisher is kubemta_common's `BusPublisher` Protocol, so tests substitute a fake for the broker.
"""

from typing import Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session


class SmtpHandler(Protocol):
    """The aiosmtpd hooks of the ingress; each returns the SMTP reply to send."""

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        """Record the client's name; return the EHLO reply lines."""

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        """Accept or refuse the envelope sender."""

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        """Accept or refuse one recipient."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Queue the message (or refuse it)."""

    async def handle_exception(self, error: Exception) -> str:
        """The reply when a command failed with an unexpected exception."""
