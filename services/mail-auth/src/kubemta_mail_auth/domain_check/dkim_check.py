"""The `dkim:<selector>` checks: every key the signer would use is published, and is the same key.

The keys are public keys from the DKIM keys directory (`PublicKeyStore.published_keys(domain)`:
the keys of the domain or of its closest parent that has keys, which is the d= the
queue-manager signs with); `<selector>.pub` files are enough, so the ingress never needs the
private keys. For each key, `<selector>._domainkey.<signing domain>` TXT is looked up, its
strings joined and parsed (RFC 6376 §3.6.1), and p= and k= compared with the key. Several TXT
records at the name are wrong: the result is undefined (RFC 6376 §3.6.2.2). An empty p= is a
revoked key (RFC 6376 §3.6.1). RSA keys are compared by their numbers (records.same_key), as
p= may hold a SubjectPublicKeyInfo or a bare PKCS#1 RSAPublicKey.
"""

import datetime

from kubemta_mail_auth.dkim.public_keys import PublicKey, PublicKeyStore
from kubemta_mail_auth.dkim.records import (
    KEY_TYPES,
    RecordError,
    parse_record,
    record_name,
    record_value,
    same_key,
    zone_line,
)
from kubemta_mail_auth.domain_check.dns_queries import Resolver
from kubemta_mail_auth.domain_check.model import Check, Status

CHECK_PREFIX = "dkim"
GENERATE_COMMAND = "kubemta-admin dkim generate --domain {domain} --selector {selector}"


def suggested_selector(today: datetime.date | None = None) -> str:
    """A selector for a first key: `s` and the year and month, e.g. `s202607`."""
    return (today or datetime.datetime.now(datetime.UTC).date()).strftime("s%Y%m")


async def check_dkim(domain: str, keys: PublicKeyStore | None, resolver: Resolver) -> list[Check]:
    """One check per signing key of `domain`; one `dkim` check (missing) when it has none."""
    signing = keys.published_keys(domain) if keys is not None else []
    if not signing:
        command = GENERATE_COMMAND.format(domain=domain, selector=suggested_selector())
        where = "KUBEMTA_DKIM_KEYS_DIR is not set" if keys is None else f"no key for {domain} or a parent domain"
        return [
            Check(
                name=CHECK_PREFIX,
                status=Status.MISSING,
                detail=f"mail from {domain} is not DKIM-signed: {where}; create a key in the keys directory with "
                f"`{command}` and publish the DNS record it prints",
            )
        ]
    return [await _check_key(domain, key, resolver) for key in signing]


async def _check_key(domain: str, key: PublicKey, resolver: Resolver) -> Check:
    check_name = f"{CHECK_PREFIX}:{key.selector}"
    name = record_name(key.domain, key.selector)
    expected = zone_line(key.domain, key.selector, record_value(key.algorithm, key.public))
    answer = await resolver.query(name, "TXT")
    if answer.outcome.temporary:
        detail = f"cannot look up {name}: {answer.detail}"
        return Check(name=check_name, status=Status.UNKNOWN, expected=expected, detail=detail)
    found = list(answer.records)
    status, detail = _compare(name, key.source, found, KEY_TYPES[key.algorithm], key.public)
    if key.domain != domain:
        detail += f" (mail from {domain} is signed with d={key.domain})"
    return Check(name=check_name, status=status, found=found, expected=expected, detail=detail)


def _compare(name: str, key_file: str, found: list[str], key_type: str, public: str) -> tuple[Status, str]:
    """The verdict on the TXT records `found` at `name` for the key in `key_file`."""
    if not found:
        return Status.MISSING, f"no DKIM key record at {name}: receivers cannot verify the signatures"
    if len(found) > 1:
        return Status.WRONG, (
            f"{name} has {len(found)} TXT records; verification is then undefined (RFC 6376 §3.6.2.2): "
            "keep only the expected one"
        )
    try:
        published = parse_record(found[0])
    except RecordError as exc:
        return Status.WRONG, f"the record at {name} is not a valid DKIM key record: {exc}"
    if not published.public:
        return Status.WRONG, f"the key at {name} is revoked (empty p=) while kubemta signs with the key of {key_file}"
    if published.key_type != key_type:
        return Status.WRONG, f"{name} publishes a k={published.key_type} key, but {key_file} is a {key_type} key"
    if not same_key(published.public, public, key_type):
        return Status.WRONG, f"{name} publishes another {key_type} key than {key_file}: signatures fail to verify"
    return Status.OK, f"{name} publishes the {key_type} key kubemta signs with ({key_file})"
