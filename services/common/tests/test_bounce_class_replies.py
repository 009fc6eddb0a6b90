"""Bounce classes of real reply texts from the big providers, filters, blocklists and common MTAs.

Each case is (reply code, the status the worker records, the diagnostic as the worker
records it — "code text", continuation lines joined with their enhanced codes as
aiosmtplib keeps them —, expected class, expected hard). The status is the reply's
enhanced code, or X.0.0 when the reply has none (delivery-worker replies.enhanced_status).
"""

import pytest

from kubemta_common.bounce_class import BounceClass, classify

INVALID = BounceClass.INVALID_RECIPIENT
FULL = BounceClass.MAILBOX_FULL
LARGE = BounceClass.MESSAGE_TOO_LARGE
CONTENT = BounceClass.CONTENT_BLOCKED
POLICY = BounceClass.POLICY
REPUTATION = BounceClass.REPUTATION
RATE = BounceClass.RATE_LIMITED
DNS = BounceClass.DNS_FAILURE
TLS = BounceClass.TLS_FAILURE
EXPIRED = BounceClass.EXPIRED
CONNECTION = BounceClass.CONNECTION_FAILURE
OTHER = BounceClass.OTHER
HARD, SOFT = True, False

GMAIL = [
    (
        550,
        "5.1.1",
        "550 5.1.1 The email account that you tried to reach does not exist. Please try 5.1.1 double-checking the "
        "recipient's email address for typos or 5.1.1 unnecessary spaces. Learn more at 5.1.1 "
        "https://support.google.com/mail/?p=NoSuchUser 41be03b00d2f7-5e2f8a1b7c9si1234567a12.123 - gsmtp",
        INVALID,
        HARD,
    ),
    (
        550,
        "5.2.1",
        "550 5.2.1 The email account that you tried to reach is disabled. Learn more at 5.2.1 "
        "https://support.google.com/mail/?p=DisabledUser a1si123456qkb.12 - gsmtp",
        INVALID,
        HARD,
    ),
    (
        452,
        "4.2.2",
        "452 4.2.2 The email account that you tried to reach is over quota. Please direct 4.2.2 the recipient to "
        "4.2.2 https://support.google.com/mail/?p=OverQuotaTemp e7si1234567qtb.45 - gsmtp",
        FULL,
        SOFT,
    ),
    (
        552,
        "5.2.2",
        "552 5.2.2 The recipient's inbox is out of storage space. Please direct the 5.2.2 recipient to 5.2.2 "
        "https://support.google.com/mail/?p=OverQuotaPerm 5614622812f47-3e2f1a2b3c4si123456b6e.12 - gsmtp",
        FULL,
        SOFT,
    ),
    (
        552,
        "5.2.3",
        "552 5.2.3 Your message exceeded Google's message size limits. Please visit 5.2.3 "
        "https://support.google.com/mail/?p=MaxSizeError to view our size 5.2.3 guidelines. "
        "d9443c01a7336-1e2f3a4b5c6si123456ple.12 - gsmtp",
        LARGE,
        HARD,
    ),
    (
        550,
        "5.7.26",
        "550 5.7.26 This mail has been blocked because the sender is unauthenticated. 5.7.26 Gmail requires all "
        "senders to authenticate with either SPF or DKIM. 5.7.26 5.7.26 Authentication results: 5.7.26 DKIM = did "
        "not pass 5.7.26 SPF [example.com] with ip: [192.0.2.7] = did not pass 5.7.26 5.7.26 For instructions on "
        "setting up authentication, go to 5.7.26 https://support.google.com/mail/answer/81126#authentication "
        "a640c23a62f3a-a7e2f1b2c3dsi1234567a66.123 - gsmtp",
        POLICY,
        HARD,
    ),
    (
        550,
        "5.7.26",
        "550 5.7.26 Unauthenticated email from example.com is not accepted due to domain's 5.7.26 DMARC policy. "
        "Please contact the administrator of example.com domain 5.7.26 if this was a legitimate mail. To learn "
        "about the DMARC 5.7.26 initiative, go to 5.7.26 https://support.google.com/mail/?p=DmarcRejection "
        "m12si123456pgs.34 - gsmtp",
        POLICY,
        HARD,
    ),
    (
        421,
        "4.7.26",
        "421 4.7.26 This mail has been rate limited because it is unauthenticated. Gmail 4.7.26 requires all "
        "senders to authenticate with either SPF or DKIM. - gsmtp",
        POLICY,
        SOFT,
    ),
    (
        550,
        "5.7.25",
        "550 5.7.25 [192.0.2.7] The IP address sending this message does not have a 5.7.25 PTR record setup, or "
        "the corresponding forward DNS entry does not 5.7.25 point to the sending IP. As a policy, Gmail does not "
        "accept messages 5.7.25 from IPs with missing PTR records. - gsmtp",
        POLICY,
        HARD,
    ),
    (
        421,
        "4.7.28",
        "421 4.7.28 [192.0.2.7 15] Our system has detected an unusual rate of 4.7.28 unsolicited mail "
        "originating from your IP address. To protect our 4.7.28 users from spam, mail sent from your IP address "
        "has been temporarily 4.7.28 rate limited. Please visit 4.7.28 "
        "https://support.google.com/mail/?p=UnsolicitedRateLimitError to 4.7.28 review our Bulk Email Senders "
        "Guidelines. q7si123456wrc.12 - gsmtp",
        RATE,
        SOFT,
    ),
    (
        550,
        "5.7.1",
        "550 5.7.1 [192.0.2.7 12] Our system has detected that this message is 5.7.1 likely unsolicited mail. To "
        "reduce the amount of spam sent to Gmail, 5.7.1 this message has been blocked. Please visit 5.7.1 "
        "https://support.google.com/mail/?p=UnsolicitedMessageError 5.7.1 for more information. - gsmtp",
        CONTENT,
        HARD,
    ),
    (
        550,
        "5.7.1",
        "550 5.7.1 [192.0.2.7] Our system has detected that this message is 5.7.1 likely suspicious due to the "
        "very low reputation of the sending IP 5.7.1 address. To best protect our users from spam, the message has "
        "5.7.1 been blocked. Please visit 5.7.1 https://support.google.com/mail/answer/188131 for more "
        "information. - gsmtp",
        REPUTATION,
        HARD,
    ),
    (
        552,
        "5.7.0",
        "552 5.7.0 This message was blocked because its content presents a potential 5.7.0 security issue. Please "
        "visit 5.7.0 https://support.google.com/mail/?p=BlockedMessage to review our 5.7.0 message content and "
        "attachment content guidelines. - gsmtp",
        CONTENT,
        HARD,
    ),
    (
        450,
        "4.2.1",
        "450 4.2.1 The user you are trying to contact is receiving mail at a rate that 4.2.1 prevents additional "
        "messages from being delivered. Please resend your 4.2.1 message at a later point. If the user is able to "
        "receive 4.2.1 mail at that time, your message will be delivered. For more 4.2.1 information, please "
        "visit 4.2.1 https://support.google.com/mail/?p=ReceivingRate - gsmtp",
        RATE,
        SOFT,
    ),
    (550, "5.4.5", "550 5.4.5 Daily user sending limit exceeded. - gsmtp", RATE, SOFT),
    (421, "4.3.0", "421 4.3.0 Temporary System Problem.  Try again later (10). - gsmtp", OTHER, SOFT),
    (421, "4.7.0", "421 4.7.0 Try again later, closing connection. (EHLO) - gsmtp", RATE, SOFT),
    (
        550,
        "5.7.1",
        "550 5.7.1 [192.0.2.7] The IP you're using to send mail is not authorized to 5.7.1 send email directly to "
        "our servers. Please use the SMTP relay at your 5.7.1 service provider instead. - gsmtp",
        POLICY,
        HARD,
    ),
    (
        550,
        "5.7.1",
        "550 5.7.1 The user or domain that you are sending to (or from) has a policy that 5.7.1 prohibited the "
        "mail that you sent. Please contact your domain 5.7.1 administrator for further details. - gsmtp",
        POLICY,
        HARD,
    ),
    (
        550,
        "5.7.32",
        "550 5.7.32 From: header isn't aligned with either the authenticated SPF or DKIM 5.7.32 organizational "
        "domain. - gsmtp",
        POLICY,
        HARD,
    ),
    (452, "4.5.3", "452 4.5.3 Your message has too many recipients. - gsmtp", RATE, SOFT),
    (530, "5.7.0", "530 5.7.0 Must issue a STARTTLS command first. - gsmtp", TLS, HARD),
]

MICROSOFT = [
    (
        550,
        "5.5.0",
        "550 5.5.0 Requested action not taken: mailbox unavailable (S2017) [DM6NAM12FT012.eop-nam12.prod.protection."
        "outlook.com 2024-01-01T00:00:00.000Z 08DC0A0B0C0D0E0F]",
        INVALID,
        HARD,
    ),
    (
        550,
        "5.4.1",
        "550 5.4.1 Recipient address rejected: Access denied. For more information see https://aka.ms/EXOSmtpErrors "
        "[AM4PEPF00027A5F.eurprd04.prod.outlook.com 2024-01-01T00:00:00.000Z 08DC0A0B0C0D0E0F]",
        INVALID,
        HARD,
    ),
    (
        550,
        "5.7.1",
        "550 5.7.1 Unfortunately, messages from [192.0.2.7] weren't sent. Please contact your Internet service "
        "provider since part of their network is on our block list (S3150). You can also refer your provider to "
        "http://mail.live.com/mail/troubleshooting.aspx#errors. [DB5EUR03FT012.eop-EUR03.prod.protection.outlook.com]",
        REPUTATION,
        HARD,
    ),
    (
        550,
        "5.7.1",
        "550 5.7.1 Service unavailable, Client host [192.0.2.7] blocked using Spamhaus. To request removal from "
        "this list see https://www.spamhaus.org/query/ip/192.0.2.7 (AS3130). [BN8NAM12FT012.eop-nam12.prod."
        "protection.outlook.com]",
        REPUTATION,
        HARD,
    ),
    (
        550,
        "5.7.606",
        "550 5.7.606 Access denied, banned sending IP [192.0.2.7]. To request removal from this list please visit "
        "https://sender.office.com/ and follow the directions. For more information please go to "
        "http://go.microsoft.com/fwlink/?LinkID=526655 AS(1430)",
        REPUTATION,
        HARD,
    ),
    (
        550,
        "5.7.708",
        "550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.",
        REPUTATION,
        HARD,
    ),
    (
        550,
        "5.7.511",
        "550 5.7.511 Access denied, banned sender[192.0.2.7]. To request removal from this list please forward this "
        "message to delist@messaging.microsoft.com. For more information please go to "
        "http://go.microsoft.com/fwlink/?LinkId=526653. AS(1110)",
        REPUTATION,
        HARD,
    ),
    (
        451,
        "4.7.651",
        "451 4.7.651 The mail server [192.0.2.7] has been temporarily rate limited due to IP reputation. For e-mail "
        "delivery information, see https://postmaster.live.com (S775) [Name=Protocol Filter Agent]",
        REPUTATION,
        SOFT,
    ),
    (
        451,
        "4.7.500",
        "451 4.7.500 Server busy. Please try again later from [192.0.2.7]. (S77719) "
        "[MW2NAM12FT012.eop-nam12.prod.protection.outlook.com]",
        RATE,
        SOFT,
    ),
    (
        452,
        "4.5.3",
        "452 4.5.3 Too many recipients (AS780090) [BN8NAM12FT012.eop-nam12.prod.protection.outlook.com]",
        RATE,
        SOFT,
    ),
    (
        421,
        "4.3.2",
        "421 4.3.2 The maximum number of concurrent server connections has exceeded a limit, closing transmission "
        "channel",
        RATE,
        SOFT,
    ),
    (
        550,
        "5.7.509",
        "550 5.7.509 Access denied, sending domain example.com does not pass DMARC verification and has a DMARC "
        "policy of reject. [AM0PR04MB1234.eurprd04.prod.outlook.com]",
        POLICY,
        HARD,
    ),
    (
        550,
        "5.7.515",
        "550 5.7.515 Access denied, sending domain [example.com] doesn't meet the required authentication level. "
        "The sender's domain in the 5322.From address doesn't meet the authentication requirements defined for "
        "the sender. To learn how to fix this, see https://go.microsoft.com/fwlink/?linkid=2282611",
        POLICY,
        HARD,
    ),
    (
        554,
        "5.2.2",
        "554 5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded; "
        "Failed to process message due to a permanent exception with message Cannot open mailbox.",
        FULL,
        SOFT,
    ),
    (
        550,
        "5.1.10",
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        INVALID,
        HARD,
    ),
    (550, "5.1.1", "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found", INVALID, HARD),
    (
        550,
        "5.7.520",
        "550 5.7.520 Access denied, Your organization does not allow external forwarding. Please contact your "
        "administrator for further assistance. AS(7555)",
        POLICY,
        HARD,
    ),
    (550, "5.4.300", "550 5.4.300 Message expired", EXPIRED, HARD),
    (554, "5.4.14", "554 5.4.14 Hop count exceeded - possible mail loop ATTR34", OTHER, HARD),
    (550, "5.7.1", "550 5.7.1 RESOLVER.RST.NotAuthorized; not authorized", POLICY, HARD),
    (552, "5.3.4", "552 5.3.4 Message size exceeds fixed maximum message size", LARGE, HARD),
    (421, "4.7.0", "421 4.7.0 Temporary server error. Please try again later. PRX4", OTHER, SOFT),
    (550, "5.7.1", "550 5.7.1 Message rejected as spam by Content Filtering.", CONTENT, HARD),
]

YAHOO_AOL = [
    (
        554,
        "5.0.0",
        "554 delivery error: dd This user doesn't have a yahoo.com account (someone@yahoo.com) [0] - "
        "mta1234.mail.bf1.yahoo.com",
        INVALID,
        HARD,
    ),
    (
        554,
        "5.0.0",
        "554 delivery error: dd Sorry your message to someone@aol.com cannot be delivered. This mailbox is disabled "
        "(554.30). - mta1234.mail.gq1.yahoo.com",
        INVALID,
        HARD,
    ),
    (
        421,
        "4.7.0",
        "421 4.7.0 [TSS04] Messages from 192.0.2.7 temporarily deferred due to unexpected volume or user "
        "complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
        REPUTATION,
        SOFT,
    ),
    (
        553,
        "5.7.2",
        "553 5.7.2 [TSS09] All messages from 192.0.2.7 will be permanently deferred; Retrying will NOT succeed. "
        "See https://postmaster.yahooinc.com/error-codes",
        REPUTATION,
        HARD,
    ),
    (
        554,
        "5.7.9",
        "554 5.7.9 Message not accepted for policy reasons.  See https://postmaster.yahooinc.com/error-codes",
        POLICY,
        HARD,
    ),
    (
        550,
        "5.7.9",
        "550 5.7.9 This mail has been blocked because the sender is unauthenticated. Yahoo requires all senders to "
        "authenticate with either SPF or DKIM.",
        POLICY,
        HARD,
    ),
    (552, "5.0.0", "552 1 Requested mail action aborted, mailbox not found", INVALID, HARD),
    (
        421,
        "4.7.0",
        "421 4.7.0 [TS01] Messages from 192.0.2.7 temporarily deferred due to user complaints - 4.16.55.1; see "
        "https://help.yahoo.com/kb/postmaster/SLN3434.html",
        REPUTATION,
        SOFT,
    ),
    (
        553,
        "5.7.1",
        "553 5.7.1 [BL21] Connections will not be accepted from 192.0.2.7, because the ip is in Spamhaus's list; "
        "see https://postmaster.yahooinc.com/error-codes",
        REPUTATION,
        HARD,
    ),
    (421, "4.0.0", "421 Max message per connection reached, closing transmission channel", RATE, SOFT),
    (
        421,
        "4.7.0",
        "421 4.7.0 [TSS11] Excessive unknown recipients - possible Open Relay (#4.16.56)",
        REPUTATION,
        SOFT,
    ),
]

APPLE_PROTON_GMX_ZOHO = [
    (550, "5.1.1", "550 5.1.1 <someone@icloud.com>: user does not exist", INVALID, HARD),
    (552, "5.2.2", "552 5.2.2 <someone@icloud.com>: user is over quota", FULL, SOFT),
    (
        554,
        "5.7.1",
        "554 5.7.1 [CS01] Message rejected due to local policy. Please visit https://support.apple.com/en-us/HT204137",
        POLICY,
        HARD,
    ),
    (
        550,
        "5.7.1",
        "550 5.7.1 [HM08] Message rejected due to local policy. Please visit https://support.apple.com/en-us/HT204137",
        POLICY,
        HARD,
    ),
    (
        550,
        "5.1.1",
        "550 5.1.1 <someone@proton.me>: Recipient address rejected: Address does not exist",
        INVALID,
        HARD,
    ),
    (
        452,
        "4.2.2",
        "452 4.2.2 <someone@proton.me>: Recipient address rejected: Mailbox is full",
        FULL,
        SOFT,
    ),
    (
        550,
        "5.0.0",
        "550 Requested action not taken: mailbox unavailable invalid DNS MX or A/AAAA resource record",
        POLICY,
        HARD,
    ),
    (
        554,
        "5.0.0",
        "554 Transaction failed Reject due to policy restrictions. For explanation visit "
        "https://www.gmx.net/mail/senderguidelines?c=pr",
        POLICY,
        HARD,
    ),
    (
        554,
        "5.0.0",
        "554 Transaction failed Reject due to IP address is black listed. For explanation visit "
        "https://web.de/email/senderguidelines?c=bl",
        REPUTATION,
        HARD,
    ),
    (550, "5.1.1", "550 5.1.1 User does not exist - <someone@zoho.com>", INVALID, HARD),
    (552, "5.2.2", "552 5.2.2 Mailbox size limit exceeded", FULL, SOFT),
]

FILTERS_AND_BLOCKLISTS = [
    (550, "5.0.0", "550 Invalid Recipient - https://community.mimecast.com/docs/DOC-1369#550", INVALID, HARD),
    (
        554,
        "5.0.0",
        "554 Email rejected due to security policies - https://community.mimecast.com/docs/DOC-1369#554",
        POLICY,
        HARD,
    ),
    (
        550,
        "5.0.0",
        "550 Rejected by header based Anti-Spoofing policy: someone@example.com - "
        "https://community.mimecast.com/docs/DOC-1369#550",
        POLICY,
        HARD,
    ),
    (
        451,
        "4.0.0",
        "451 Internal resource temporarily unavailable - https://community.mimecast.com/docs/DOC-1369#451",
        OTHER,
        SOFT,
    ),
    (
        550,
        "5.0.0",
        "550 Administrative prohibition - envelope blocked - https://community.mimecast.com/docs/DOC-1369#550",
        POLICY,
        HARD,
    ),
    (
        554,
        "5.0.0",
        "554 Maximum email size exceeded - https://community.mimecast.com/docs/DOC-1369#554",
        LARGE,
        HARD,
    ),
    (451, "4.0.0", "451 Open relay not allowed - https://community.mimecast.com/docs/DOC-1369#451", POLICY, SOFT),
    (554, "5.7.0", "554 5.7.0 Blocked - see https://ipcheck.proofpoint.com/?ip=192.0.2.7", REPUTATION, HARD),
    (550, "5.1.1", "550 5.1.1 User Unknown", INVALID, HARD),
    (
        554,
        "5.0.0",
        "554 Service unavailable; Client host [192.0.2.7] blocked using b.barracudacentral.org; "
        "http://www.barracudanetworks.com/reputation/?pr=1&ip=192.0.2.7",
        REPUTATION,
        HARD,
    ),
    (
        554,
        "5.7.1",
        "554 5.7.1 Service unavailable; Client host [192.0.2.7] blocked using zen.spamhaus.org; "
        "https://www.spamhaus.org/query/ip/192.0.2.7",
        REPUTATION,
        HARD,
    ),
    (
        554,
        "5.7.1",
        "554 5.7.1 Service unavailable; Client host [192.0.2.7] blocked using bl.spamcop.net; Blocked - see "
        "https://www.spamcop.net/bl.shtml?192.0.2.7",
        REPUTATION,
        HARD,
    ),
    (
        554,
        "5.7.1",
        "554 5.7.1 Service unavailable; Sender address [someone@example.com] blocked using dbl.spamhaus.org; "
        "https://www.spamhaus.org/query/domain/example.com",
        REPUTATION,
        HARD,
    ),
    (550, "5.7.1", "550 5.7.1 Client host rejected: 192.0.2.7 is listed at dnsbl.sorbs.net", REPUTATION, HARD),
    (554, "5.7.0", "554 5.7.0 Reject, id=12345-01 - INFECTED: Eicar-Signature", CONTENT, HARD),
    (554, "5.7.0", "554 5.7.0 Reject, id=12345-02 - spam", CONTENT, HARD),
    (550, "5.7.1", "550 5.7.1 Virus found: Win.Test.EICAR_HDB-1", CONTENT, HARD),
]

MTAS_AND_GREYLISTING = [
    (
        450,
        "4.2.0",
        "450 4.2.0 <someone@example.com>: Recipient address rejected: Greylisted, see "
        "http://postgrey.schweikert.ch/help/example.com.html",
        RATE,
        SOFT,
    ),
    (451, "4.7.1", "451 4.7.1 Greylisting in action, please come back later", RATE, SOFT),
    (451, "4.7.1", "451 4.7.1 Try again later", RATE, SOFT),
    (
        552,
        "5.2.2",
        "552 5.2.2 <someone@example.com> Quota exceeded (mailbox for user is full)",
        FULL,
        SOFT,
    ),
    (550, "5.1.1", "550 5.1.1 <someone@example.com> User doesn't exist: someone@example.com", INVALID, HARD),
    (
        550,
        "5.1.1",
        "550 5.1.1 <someone@example.com>: Recipient address rejected: User unknown in local recipient table",
        INVALID,
        HARD,
    ),
    (
        550,
        "5.1.1",
        "550 5.1.1 <someone@example.com>: Recipient address rejected: User unknown in virtual mailbox table",
        INVALID,
        HARD,
    ),
    (550, "5.0.0", "550 No Such User Here", INVALID, HARD),
    (550, "5.1.1", "550 5.1.1 <someone@example.com>... User unknown", INVALID, HARD),
    (554, "5.7.1", "554 5.7.1 <someone@example.com>: Relay access denied", POLICY, HARD),
    (
        450,
        "4.7.1",
        "450 4.7.1 Client host rejected: cannot find your hostname, [192.0.2.7]",
        POLICY,
        SOFT,
    ),
    (
        450,
        "4.1.8",
        "450 4.1.8 <sender@example.com>: Sender address rejected: Domain not found",
        POLICY,
        SOFT,
    ),
    (
        553,
        "5.1.8",
        "553 5.1.8 <sender@example.com>... Domain of sender address sender@example.com does not exist",
        POLICY,
        HARD,
    ),
    (
        450,
        "4.1.2",
        "450 4.1.2 <someone@example.invalid>: Recipient address rejected: Domain not found",
        DNS,
        SOFT,
    ),
    (552, "5.3.4", "552 5.3.4 Message size exceeds fixed limit", LARGE, HARD),
    (552, "5.0.0", "552 Message size exceeds maximum permitted", LARGE, HARD),
    (452, "4.5.3", "452 4.5.3 Error: too many recipients", RATE, SOFT),
    (421, "4.7.0", "421 4.7.0 mx.example.com Error: too many connections from 192.0.2.7", RATE, SOFT),
    (
        550,
        "5.7.23",
        "550 5.7.23 <someone@example.com>: Recipient address rejected: Message rejected due to: SPF fail - not "
        "authorized. Please see http://www.openspf.net/Why?s=mfrom;id=sender@example.com;ip=192.0.2.7;"
        "r=<UNKNOWN>",
        POLICY,
        HARD,
    ),
    (550, "5.7.1", "550 5.7.1 Email rejected per DMARC policy for example.com", POLICY, HARD),
    (550, "5.7.20", "550 5.7.20 No passing DKIM signature found", POLICY, HARD),
    (550, "5.7.1", "550 5.7.1 Your IP address has been blacklisted", REPUTATION, HARD),
    (451, "4.3.0", "451 4.3.0 Temporary local problem - please try later", OTHER, SOFT),
    (550, "5.0.0", "550 Requested action not taken: mailbox unavailable", INVALID, HARD),
    (552, "5.0.0", "552 Requested mail action aborted: exceeded storage allocation", FULL, SOFT),
    (550, "5.0.0", "550 Requested action not taken", INVALID, HARD),
    (554, "5.0.0", "554 Transaction failed", OTHER, HARD),
    (451, "4.0.0", "451 Requested action aborted: local error in processing", OTHER, SOFT),
    (454, "4.0.0", "454 TLS not available due to temporary reason", TLS, SOFT),
    (535, "5.7.8", "535 5.7.8 Error: authentication failed: authentication failure", POLICY, HARD),
    (550, "5.1.6", "550 5.1.6 Recipient addresses have moved", INVALID, HARD),
    (553, "5.0.0", "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)", INVALID, HARD),
    (421, "4.0.0", "421 mx.example.com Service not available, closing transmission channel", CONNECTION, SOFT),
]

CASES = GMAIL + MICROSOFT + YAHOO_AOL + APPLE_PROTON_GMX_ZOHO + FILTERS_AND_BLOCKLISTS + MTAS_AND_GREYLISTING


def test_the_table_has_enough_real_replies_of_every_class() -> None:
    assert len(CASES) >= 60
    assert {case[3] for case in CASES} == set(BounceClass)


def _case_id(case: tuple[int, str, str, BounceClass, bool]) -> str:
    return f"{case[0]} {case[2][4:60]}"


@pytest.mark.parametrize(("code", "status", "text", "expected", "hard"), CASES, ids=[_case_id(c) for c in CASES])
def test_real_replies_get_their_class(code: int, status: str, text: str, expected: BounceClass, hard: bool) -> None:
    found = classify(code, status, text)
    assert (found.bounce_class, found.hard) == (expected, hard)


@pytest.mark.parametrize(("code", "status", "text", "expected", "hard"), CASES[::5])
def test_the_text_is_read_whatever_its_case_and_line_breaks(
    code: int, status: str, text: str, expected: BounceClass, hard: bool
) -> None:
    shouted = text.upper().replace(". ", ".\r\n\t")
    assert classify(code, status, shouted).bounce_class is expected
