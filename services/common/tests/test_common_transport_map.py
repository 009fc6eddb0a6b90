"""kubemta_common.transport_map: the one KUBEMTA_TRANSPORTS parser, shared by the dns-resolver and the ingress."""

import pytest

from kubemta_common.transport_map import LMTP_PORT, Nexthop, parse_transports


def test_lmtp_entries_are_recognised_with_their_next_hop() -> None:
    transports = parse_transports(
        "mail.example=lmtp:[dovecot.mail.svc]:2424;sock.example=lmtp:unix:/run/dovecot/lmtp;out.example=smtp:[relay]"
    )
    tcp = transports.lookup("MAIL.Example.")
    assert tcp is not None and tcp.is_lmtp
    assert tcp.nexthop == Nexthop("dovecot.mail.svc", 2424, mx_lookup=False)
    sock = transports.lookup("sock.example")
    assert sock is not None and sock.is_lmtp and sock.nexthop.unix_socket == "/run/dovecot/lmtp"
    out = transports.lookup("out.example")
    assert out is not None and not out.is_lmtp
    default_port = parse_transports("d.example=lmtp:mailstore").lookup("d.example")
    assert default_port is not None and default_port.nexthop.port == LMTP_PORT


@pytest.mark.parametrize("bad", ["x.example=lmtp:unix:relative", "x.example=pop3:[h]", "=lmtp:[h]", "x.example"])
def test_bad_entries_name_the_problem(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid|unsupported|empty"):
        parse_transports(bad)
