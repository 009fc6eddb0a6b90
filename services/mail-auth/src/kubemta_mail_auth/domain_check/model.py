"""The domain check's report: one `Check` per record family, gathered in a `DomainReport`.

Pydantic models, so the ingress API returns them as JSON unchanged. Statuses are kept
few on purpose: `ok`, `missing` (nothing published), `wrong` (published but broken or
not matching this MTA) and `unknown` (could not be decided: a DNS timeout or SERVFAIL,
or nothing configured to compare with, such as no sending IPs).
"""

from enum import StrEnum

from pydantic import BaseModel, Field


class Status(StrEnum):
    """The verdict on one record family."""

    OK = "ok"
    MISSING = "missing"
    WRONG = "wrong"
    UNKNOWN = "unknown"


class Check(BaseModel):
    """One check: e.g. `dkim:s2026`, `spf`, `dmarc`, `mx`, `hostname`, `ptr:192.0.2.1`."""

    name: str
    status: Status
    found: list[str] = Field(default_factory=list, description="The records seen in DNS")
    expected: str | None = Field(default=None, description="The exact record (zone-file line) to publish")
    detail: str = Field(description="What is right or wrong, in one or two sentences")


class DomainReport(BaseModel):
    """Every check of one sending domain; `ok` when all of them are ok."""

    domain: str
    ok: bool
    checks: list[Check]

    @classmethod
    def of(cls, domain: str, checks: list[Check]) -> "DomainReport":
        """The report of `checks`, ok exactly when every check is."""
        return cls(domain=domain, ok=all(check.status is Status.OK for check in checks), checks=checks)
