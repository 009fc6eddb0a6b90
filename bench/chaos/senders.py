"""SMTP clients that behave like real ones: a message that failed is sent again, unchanged, until a 250.

`clients` threads (smtplib) take the messages in order; each keeps its connection for a
while and opens a new one after any failure. A failure is anything short of a 250 after the
final dot that is not a 5xx: connection refused or reset, a 4xx, a timeout, no reply. The
same message (Message-ID, envelope, body) is then sent again after `retry_pause` seconds,
for at most `give_up` seconds. A 5xx is final (refused). `rate` paces the sending (messages
per second over all clients; 0: as fast as the clients go).
"""

import base64
import random
import secrets
import smtplib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

SENDER_DOMAIN = "sender.chaos.test"
RECIPIENT_DOMAIN = "chaos.test"
CONNECTION_MESSAGES = 50  # messages one connection carries before the client says QUIT and opens a new one
SMTP_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Letter:
    """One message of the run; retries send exactly these bytes."""

    index: int
    message_id: str
    sender: str
    recipient: str
    content: bytes


def letters(count: int, run_id: str, seed: int) -> list[Letter]:
    """`count` messages with unique Message-IDs (`<chaos-RUN-N@sender.chaos.test>`), 1-8 KiB of base64 each."""
    rng = random.Random(seed)
    made = []
    for index in range(count):
        message_id = f"<chaos-{run_id}-{index}@{SENDER_DOMAIN}>"
        sender = f"sender{index % 17}@{SENDER_DOMAIN}"
        recipient = f"rcpt{index}@{RECIPIENT_DOMAIN}"
        filler = base64.b64encode(rng.randbytes(rng.randint(768, 6144))).decode()
        body = "\r\n".join(filler[i : i + 76] for i in range(0, len(filler), 76))
        content = (
            f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: chaos {run_id} {index}\r\n"
            f"Message-ID: {message_id}\r\nDate: Sat, 05 Dec 2026 12:00:00 +0000\r\n\r\n{body}\r\n"
        ).encode()
        made.append(Letter(index, message_id, sender, recipient, content))
    return made


class _Final(Exception):
    """A 5xx: the message is refused for good."""


@dataclass
class SendStats:
    """What the clients saw (read while they run: every field is updated under the lock)."""

    accepted: dict[str, str] = field(default_factory=dict)  # Message-ID -> the 250's text (queue id)
    refused: dict[str, str] = field(default_factory=dict)  # Message-ID -> the 5xx
    gave_up: dict[str, str] = field(default_factory=dict)  # Message-ID -> the last failure
    attempts: int = 0
    retried: int = 0  # messages sent more than once
    failures: Counter[str] = field(default_factory=Counter)  # kind of failure -> times

    @property
    def done(self) -> int:
        return len(self.accepted) + len(self.refused) + len(self.gave_up)


class Senders:
    """The clients of one run; `run()` blocks until every message is accepted, refused or given up."""

    def __init__(
        self,
        host: str,
        port: int,
        mail: list[Letter],
        *,
        clients: int,
        rate: float = 0.0,
        retry_pause: float = 0.5,
        give_up: float = 180.0,
    ) -> None:
        self.host = host
        self.port = port
        self.mail = mail
        self.clients = clients
        self.rate = rate
        self.retry_pause = retry_pause
        self.give_up = give_up
        self.stats = SendStats()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._next = 0
        self._started = 0.0

    def run(self) -> SendStats:
        self._started = time.monotonic()
        threads = [threading.Thread(target=self._client, name=f"chaos-client-{n}") for n in range(self.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return self.stats

    def _take(self) -> Letter | None:
        with self._lock:
            if self._next >= len(self.mail) or self.stopping.is_set():
                return None
            letter = self.mail[self._next]
            self._next += 1
        if self.rate > 0:
            delay = self._started + letter.index / self.rate - time.monotonic()
            if delay > 0:
                self.stopping.wait(delay)
        return letter

    def _client(self) -> None:
        client: smtplib.SMTP | None = None
        sent_on_connection = 0
        try:
            while (letter := self._take()) is not None:
                deadline = time.monotonic() + self.give_up
                tries = 0
                while True:
                    tries += 1
                    try:
                        if client is None or sent_on_connection >= CONNECTION_MESSAGES:
                            _close(client, quit=client is not None)
                            client = None
                            client = smtplib.SMTP(self.host, self.port, "client.chaos.test", timeout=SMTP_TIMEOUT)
                            sent_on_connection = 0
                        reply = _send(client, letter)
                        sent_on_connection += 1
                        self._count(letter, tries, accepted=reply)
                        break
                    except _Final as refused:
                        self._count(letter, tries, refused=str(refused))
                        _close(client)
                        client = None
                        break
                    except (smtplib.SMTPException, OSError) as failure:
                        _close(client)
                        client = None
                        self._failed(failure)
                        if time.monotonic() + self.retry_pause > deadline or self.stopping.is_set():
                            self._count(letter, tries, gave_up=f"{type(failure).__name__}: {failure}")
                            break
                        time.sleep(self.retry_pause * random.uniform(0.5, 1.5))
        finally:
            _close(client, quit=True)

    def _failed(self, failure: BaseException) -> None:
        if isinstance(failure, smtplib.SMTPResponseException):
            kind = f"{failure.smtp_code // 100}xx" if failure.smtp_code >= 0 else "no reply"
        elif isinstance(failure, smtplib.SMTPServerDisconnected):
            kind = "disconnected"
        elif isinstance(failure, ConnectionRefusedError):
            kind = "refused connection"
        elif isinstance(failure, ConnectionResetError | BrokenPipeError):
            kind = "reset"
        elif isinstance(failure, TimeoutError):
            kind = "timeout"
        else:
            kind = type(failure).__name__
        with self._lock:
            self.stats.failures[kind] += 1

    def _count(self, letter: Letter, tries: int, *, accepted: str = "", refused: str = "", gave_up: str = "") -> None:
        with self._lock:
            self.stats.attempts += tries
            self.stats.retried += tries > 1
            if accepted:
                self.stats.accepted[letter.message_id] = accepted
            elif refused:
                self.stats.refused[letter.message_id] = refused
            else:
                self.stats.gave_up[letter.message_id] = gave_up


def _send(client: smtplib.SMTP, letter: Letter) -> str:
    """One transaction; the 250's text. _Final for a 5xx; smtplib's errors for everything else."""
    if client.ehlo_resp is None and client.helo_resp is None:
        code, text = client.ehlo()
        if code != 250:
            raise smtplib.SMTPResponseException(code, text)
    for command, argument in (("mail", letter.sender), ("rcpt", letter.recipient)):
        code, text = getattr(client, command)(argument)
        if code != 250:
            client.rset()
            _raise(code, text)
    try:
        code, text = client.data(letter.content)
    except smtplib.SMTPDataError as refused:  # the reply to DATA itself was not 354
        error = refused.smtp_error
        code, text = refused.smtp_code, error.encode() if isinstance(error, str) else error
    if code != 250:
        _raise(code, text)
    return text.decode("utf-8", "replace") or "250"


def _raise(code: int, text: bytes) -> None:
    if 500 <= code < 600:
        raise _Final(f"{code} {text.decode('utf-8', 'replace')}")
    raise smtplib.SMTPResponseException(code, text)


def _close(client: smtplib.SMTP | None, *, quit: bool = False) -> None:
    if client is None:
        return
    try:
        if quit:
            client.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        client.close()


def run_id() -> str:
    return secrets.token_hex(3)
