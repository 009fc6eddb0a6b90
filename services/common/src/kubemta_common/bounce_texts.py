"""The reply texts that say more than their codes: a table of patterns, each naming a bounce class.

Big providers put the real reason in the text: Gmail answers an unauthenticated sender
with 5.7.26 but a spam block, a bad IP reputation and "IP not allowed to send directly"
all with 5.7.1; Microsoft says "mailbox unavailable" with 5.5.0 (a syntax code) for an
address that does not exist; Yahoo's codes carry no enhanced status at all ("554
delivery error: dd This user doesn't have a yahoo.com account"); Postfix prefixes every
RCPT restriction with "Recipient address rejected:", whether the reason is an unknown
user, a full mailbox, greylisting or SPF.

`STRONG_RULES` are tried in order and the first match wins over the status code;
`WEAK_RULES` ("try again later") only name a class the codes left open. The order is
the table's meaning: a text naming a specific cause (TLS, SPF/DKIM/DMARC, the sender
address, a blocklist or reputation, a rate) comes before the generic words the same
text may also hold ("blocked", "policy", "recipient address rejected", "spam" in "to
protect our users from spam"). A rule may name OTHER to stop the later ones ("Temporary
System Problem. Try again later" is not a rate limit).

The text is hostile: at most `TEXT_LIMIT` characters are read, case-folded, with the
enhanced status codes of continuation lines removed ("...unusual rate of 4.7.28
unsolicited mail..." from a multi-line reply joined on one line) and whitespace
collapsed. Every pattern is literal alternatives with at most one bounded gap
(`.{0,N}`), so matching stays linear in the text's length.
"""

import re
from dataclasses import dataclass

from kubemta_common.bounce_classes import BounceClass

TEXT_LIMIT = 1024
"""Characters of a diagnostic that are read: twice the worker's 500-character diagnostics (replies.DIAGNOSTIC_LIMIT),
enough for kubemta's texts that wrap one (the attempt deadline's "...; last: <host's failure>"). Matching costs
about 1 ms per 500 characters, so the limit also bounds what a hostile text can cost (a few ms)."""

_CONTINUATION_CODES = re.compile(r"(?<![\w.])(?:[245][0-9][0-9][ -])?[245]\.[0-9]{1,3}\.[0-9]{1,3}(?![\w.])")
"""RFC 3463 codes with or without the reply code before them ("550-5.7.1 "), on any line."""
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class TextRule:
    """Texts matching `pattern` (on the normalised text) are of `bounce_class`; `source` names who sends them."""

    bounce_class: BounceClass
    pattern: re.Pattern[str]
    source: str


def _rule(bounce_class: BounceClass, source: str, *alternatives: str) -> TextRule:
    return TextRule(bounce_class, re.compile("|".join(f"(?:{a})" for a in alternatives)), source)


_NOT = r"(?:not|n't|n’t)"  # "does not", "doesn't", "doesn’t" (typographic apostrophe)

STRONG_RULES: tuple[TextRule, ...] = (
    # kubemta's own TLS failures (worker, resolver) and servers that require TLS.
    _rule(
        BounceClass.TLS_FAILURE,
        "kubemta tls_negotiation/route_tls; RFC 3207 530 5.7.0; Postfix smtpd_tls_security_level",
        r"tls is required, but",
        r"mta-sts policy of .{0,300}? allows none of its mx hosts",
        r"must issue a starttls",
        r"starttls (?:is )?required",
        r"(?:tls|encryption) (?:is )?required",
        r"tls (?:handshake|negotiation) failed",
        r"certificate (?:verify failed|(?:could|can) ?not be verified|has expired|not verified)",
    ),
    # SASL to a relayhost: an authentication problem of our setup.
    _rule(
        BounceClass.POLICY,
        "kubemta relay_auth; RFC 4954 535 5.7.8",
        r"sasl (?:authentication|mechanism)",
        r"offers no sasl",
        r"authentication credentials invalid",
        r"authentication failed",
    ),
    # Sender authentication: SPF, DKIM, DMARC, ARC, reverse DNS (Gmail 5.7.23-5.7.27, Yahoo 5.7.9, Microsoft).
    _rule(
        BounceClass.POLICY,
        "Gmail 5.7.25/5.7.26/5.7.32, Yahoo 5.7.9, Microsoft 5.7.509/5.7.515, policyd-spf, Mimecast anti-spoofing",
        r"\bunauthenticated\b",
        r"authentication (?:information|checks?|results?|level|requirements?)",
        r"authenticate with either spf or dkim",
        r"\b(?:spf|dkim|dmarc|arc)\b",
        r"sender policy framework",
        r"\bptr record",
        r"reverse (?:dns|lookup|hostname)",
        r"cannot find your (?:reverse )?hostname",
        r"anti-?spoof",
        r"\bspoof(?:ed|ing)\b",
        r"header isn't aligned|not aligned with",
        r"not authorized to send (?:e-?mail )?directly",
    ),
    # The envelope sender or its domain (our setup), not the recipient.
    _rule(
        BounceClass.POLICY,
        "Postfix reject_unknown_sender_domain / smtpd_sender_restrictions, GMX/Web.de",
        r"sender address rejected",
        r"sender domain (?:(?:does " + _NOT + r" exist|not found|must exist|is invalid)|rejected)",
        r"invalid dns (?:mx|a|ptr|mx or a/aaaa) (?:or a/aaaa )?resource record",
        r"domain of sender address .{0,200}? does " + _NOT + r" (?:exist|resolve)",
        r"unregistered domains?",
    ),
    # Blocklists and reputation (before rates: "rate limited due to IP reputation" is about the reputation).
    _rule(
        BounceClass.REPUTATION,
        "Spamhaus, Spamcop, Barracuda, SORBS, UCEPROTECT, Proofpoint, Microsoft S3150/5.7.606/5.7.511/5.7.708, "
        "Yahoo TSS04/TSS09/TS01-TS03/BL21, Gmail low reputation",
        r"blocked using",
        r"\b(?:listed|blocked) (?:at|in|on|by) .{0,80}?(?:\bbl\b|rbl|dnsbl|blocklist|blacklist|spamhaus|spamcop"
        r"|barracuda|sorbs|uceprotect|list)",
        r"spamhaus|spamcop|barracudacentral|\bsorbs\b|uceprotect|spamrats|psbl\.",
        r"ipcheck\.proofpoint|dnsbl-lookup|dnsbl|\brbl\b",
        r"block ?list|black ?list|blacklisted|black listed|deny ?list|on our block",
        r"\b(?:low|poor|bad) reputation|reputation of the sending|(?:ip|sender|domain|sending) reputation",
        r"banned (?:sending ip|sender|ip)",
        r"traffic not accepted from this ip",
        r"\[(?:tss0[1-9]|tss1[0-9]|ts0[1-3]|bl2[0-3])\]",
        r"user complaints|complaint rate",
        r"permanently deferred",
        r"\(s3150\)|\(s3140\)|\(as3130\)",
        r"excessive unknown recipients",
    ),
    # Rates, connection limits, greylisting, sending quotas.
    _rule(
        BounceClass.RATE_LIMITED,
        "Gmail 4.7.28/4.2.1/4.5.3/5.4.5, Microsoft 4.5.3/4.7.500/4.3.2, Yahoo, Postfix anvil, greylisting "
        "(postgrey, rspamd, Exim)",
        r"gr[ae]y-? ?list",
        r"postgrey",
        r"rate[- ]?limit",
        r"(?:unusual|sending|receiving|message|connection) rate",
        r"receiving mail at a rate",
        r"too many (?:concurrent |simultaneous |smtp )?(?:connections|messages|mails?|e-?mails|recipients|rcpt"
        r"|sessions|requests|errors|invalid recipients)",
        r"throttl",
        r"slow down",
        r"server (?:is )?busy|server too busy",
        r"max(?:imum)? (?:number of )?(?:messages|connections|recipients|concurrent)",
        r"messages? per (?:connection|session|hour|day|minute)",
        r"concurrent (?:server |smtp )?connections",
        r"(?:daily|hourly|sending|send) (?:user )?(?:sending )?(?:quota|limit)",
        r"unexpected volume|high volume|volume of mail",
    ),
    # The remote's DNS: the recipient domain or host does not resolve (the sender's domain is above).
    _rule(
        BounceClass.DNS_FAILURE,
        "kubemta dns-resolver (Host or domain name not found), Postfix reject_unknown_recipient_domain, Sendmail",
        r"host or domain name (?:not found|lookup failed)",
        r"(?:recipient |destination )?domain (?:does " + _NOT + r" exist|not found|name not found)",
        r"\bhost (?:not found|unknown)\b",
        r"nxdomain|servfail",
        r"dns (?:lookup|query|resolution|resolving) (?:failed|failure|error|timed out)",
        r"unrouteable (?:mail )?domain|unroutable domain",
    ),
    # The recipient address does not exist, or its mailbox is closed.
    _rule(
        BounceClass.INVALID_RECIPIENT,
        "Gmail 5.1.1/5.2.1, Microsoft 5.5.0/5.4.1/5.1.10 RESOLVER.ADR, Yahoo/AOL dd, iCloud, Zoho, Mimecast, "
        "Proofpoint, Postfix, Exim, Sendmail, Dovecot",
        r"user ?unknown|unknown (?:user|recipient|local part|address|mailbox)",
        r"no such (?:user|recipient|mailbox|address|account)",
        r"does " + _NOT + r" exist",
        r"doesn't have an? .{0,60}? account|does not have an? .{0,60}? account",
        r"(?:user|recipient|mailbox|address|account) (?:was )?not found",
        r"not found by smtp address lookup|recip(?:ient)?notfound",
        r"mailbox (?:is )?(?:unavailable|disabled|inactive|suspended|not found|does " + _NOT + r" exist)",
        r"account (?:that you tried to reach )?(?:is )?(?:disabled|inactive|suspended|closed|deactivated)",
        r"(?:inactive|disabled|deactivated) (?:user|account|mailbox)",
        r"invalid (?:recipient|mailbox|user)",
        r"recipient address rejected: access denied",
        r"(?:user|address|mailbox) (?:is )?no longer (?:active|available|valid|exists)",
        r"(?:address|mailbox|user) (?:is )?unknown",
        r"not our customer|user not local",
    ),
    # Mailbox over quota ("mailbox size limit" and "remaining quota" before the message size rules).
    _rule(
        BounceClass.MAILBOX_FULL,
        "Gmail 4.2.2/5.2.2, Exchange QuotaExceeded, iCloud, Dovecot, Zoho, Exim",
        r"quota",
        r"mailbox (?:is )?full|full mailbox|mailbox (?:size limit|has exceeded)|mailbox for user is full",
        r"out of storage|insufficient (?:storage|disk space)|exceeded storage allocation",
        r"inbox is (?:full|out of)",
        r"storage (?:space )?(?:is )?full",
    ),
    # The message is too large for the server.
    _rule(
        BounceClass.MESSAGE_TOO_LARGE,
        "Gmail 5.2.3/5.3.4, Postfix/Exchange 5.3.4, Exim, Mimecast, kubemta size_limit",
        r"(?:message|email|mail) size (?:exceeds|exceeded|too)",
        r"exceed(?:s|ed)? .{0,40}?(?:message|email|mail) size",
        r"size limit",
        r"(?:message|email|mail) (?:is )?too (?:large|big)",
        r"message length exceeds",
        r"exceeds (?:the )?(?:fixed |maximum )?(?:maximum )?message size",
        r"maxsizeerror",
    ),
    # Content filters: spam, viruses, attachments.
    _rule(
        BounceClass.CONTENT_BLOCKED,
        "Gmail 5.7.1/5.7.0, Exchange Online Protection, amavis, ClamAV, Proofpoint, Mimecast",
        r"\bspam(?:my)?\b",
        r"unsolicited",
        r"virus|malware|infected|phish",
        r"\bcontent\b.{0,40}?(?:reject|block|filter|polic|scan|secur|detect|violat)",
        r"(?:reject|block)\w* (?:due to|because of|by) .{0,40}?content",
        r"attachment (?:type|not allowed|blocked|rejected)|blocked attachment|prohibited attachment",
        r"suspicious (?:message|content|link|url)",
        r"bulk (?:mail|e-?mail)",
    ),
    # Messages that expired on a later hop.
    _rule(
        BounceClass.EXPIRED,
        "Microsoft 5.4.300, Postfix/Sendmail next hops",
        r"message expired|delivery time expired|message (?:was |has been )?(?:in the queue|queued) too long",
        r"(?:timed out|expired) in (?:the )?queue",
    ),
    # Named as OTHER so that "try again later" in them is not taken for a rate limit.
    _rule(
        BounceClass.OTHER,
        "Gmail 4.3.0, Microsoft PRX, Mimecast 451",
        r"temporary (?:system|server|local) (?:problem|error|failure)",
        r"internal (?:server )?error|internal resource",
        r"hop count exceeded|mail loop|routing loop",
    ),
    # Generic policy refusals.
    _rule(
        BounceClass.POLICY,
        "Postfix relay, iCloud CS01/HM08, GMX/Web.de, Yahoo 5.7.9, Mimecast, Microsoft RESOLVER.RST",
        r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited)|not permitted to relay|open relay",
        r"\bpolicy\b|\bpolicies\b",
        r"prohibit",
        r"not authori[sz]ed",
        r"access denied",
        r"administrative",
        r"external forwarding",
    ),
    # "Blocked" with nothing more specific: the sender or its IP is refused.
    _rule(BounceClass.REPUTATION, "Proofpoint 'Blocked - see', Barracuda, Comcast", r"\bblocked\b|\bbanned\b"),
    # A recipient refused for no reason named above.
    _rule(
        BounceClass.INVALID_RECIPIENT,
        "Postfix 'Recipient address rejected:', Exim, Sendmail",
        r"recipient (?:address )?rejected|address rejected|rejected recipient",
        r"(?:bad|invalid) (?:destination )?(?:recipient )?address",
    ),
    # Connection problems reported in a reply (kubemta's own ones carry X.4.1/X.4.2 and are decided by them).
    _rule(
        BounceClass.CONNECTION_FAILURE,
        "kubemta connection.py, Microsoft 4.4.1/4.4.2",
        r"connection (?:refused|reset|timed out|timeout|lost|closed|dropped)",
        r"lost connection|no route to host|network is unreachable|host is unreachable|timed out",
    ),
)

WEAK_RULES: tuple[TextRule, ...] = (
    _rule(
        BounceClass.RATE_LIMITED,
        "Gmail 4.7.0 'Try again later, closing connection', rspamd and Exim greylisting, Mimecast 451, kubemta "
        "destination back-off",
        r"try (?:again )?later|retry later|come back later|please retry|resend .{0,40}?later",
        r"delivery temporarily suspended",
        r"temporarily deferred",
    ),
)


def normalised(text: str) -> str:
    """The first `TEXT_LIMIT` characters of `text`, case-folded, status codes removed, whitespace collapsed."""
    folded = text[:TEXT_LIMIT].casefold()
    return _SPACES.sub(" ", _CONTINUATION_CODES.sub(" ", folded)).strip()


def _first(rules: tuple[TextRule, ...], text: str) -> BounceClass | None:
    for rule in rules:
        if rule.pattern.search(text):
            return rule.bounce_class
    return None


def strong_text_class(text: str) -> BounceClass | None:
    """The class a normalised reply text names outright, else None."""
    return _first(STRONG_RULES, text)


def weak_text_class(text: str) -> BounceClass | None:
    """The class a normalised text suggests when the codes say nothing specific, else None."""
    return _first(WEAK_RULES, text)
