"""The harness' port picker: a test that picks several ports before binding any gets distinct ones."""

from tests.harness.ports import PORT_RANGE, free_port


def test_ports_picked_before_binding_are_all_different() -> None:
    # e2e tests pick the ingress' SMTP port, then one metrics port per service, and bind them later: a number
    # handed out twice made a metrics probe talk to the SMTP listener (BadStatusLine: 220 ...) in a CI run
    picked = [free_port() for _ in range(500)]
    assert len(set(picked)) == len(picked)
    assert all(PORT_RANGE[0] <= port < PORT_RANGE[1] for port in picked)
