"""The endpoints file: valid entries parse, hostile ones are refused without echoing a secret, and a changed file
is taken while an invalid one keeps the last good endpoints."""

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubemta_webhooks.endpoints import MAX_FILE_BYTES, EndpointsError, EndpointsFile, parse_endpoints

SECRET = "s3cr3t-s3cr3t-s3cr3t-s3cr3t"
GOOD: dict[str, Any] = {
    "name": "billing",
    "url": "https://billing.example:8443/hooks/mail?x=1",
    "secret": SECRET,
    "submitters": ["system:serviceaccount:shop:billing"],
    "events": ["delivered", "bounced"],
}


def doc(*entries: dict[str, Any]) -> bytes:
    return json.dumps(list(entries)).encode()


def test_a_valid_file() -> None:
    endpoints = parse_endpoints(doc(GOOD, {**GOOD, "name": "ops", "submitters": ["*"], "tags": ["a"]}))
    assert sorted(endpoints) == ["billing", "ops"]
    billing = endpoints["billing"]
    assert billing.key == SECRET.encode()
    assert billing.events == {"delivered", "bounced"}
    assert billing.tags == frozenset()
    assert endpoints["ops"].tags == {"a"}
    assert SECRET not in repr(billing)
    assert parse_endpoints(b"[]") == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"url": "ftp://billing.example/x"}, "http:// or https://"),
        ({"url": "https://user:pw@billing.example/x"}, "user name or password"),
        ({"url": "https://@billing.example/x"}, "user name or password"),
        ({"url": "https:///x"}, "no host"),
        ({"url": "https://billing.example/x y"}, "spaces or control"),
        ({"url": "https://billing.example/\r\nHost: evil"}, "spaces or control"),
        ({"url": "https://billing.example:99999/"}, "not a valid URL"),
        ({"url": "https://bïlling.example/"}, "ASCII"),
        ({"url": "https://billing.example/#frag"}, "fragment"),
        ({"url": 7}, "ASCII string"),
        ({"secret": "too-short"}, "secret"),
        ({"secret": "whsec_!!!"}, "base64"),
        ({"secret": 12345678901234567890123456}, "must be a string"),
        ({"name": "Billing"}, "'name'"),
        ({"name": "a" * 65}, "'name'"),
        ({"name": "bill\nme"}, "'name'"),
        ({"events": ["delivered", "opened"]}, "'events' are some of"),
        ({"events": []}, "must not be empty"),
        ({"submitters": []}, "must not be empty"),
        ({"submitters": "system:serviceaccount:shop:billing"}, "must be a list"),
        ({"submitters": [""]}, "printable strings"),
        ({"submitters": ["a\u0000b"]}, "printable strings"),
        ({"tags": ["x" * 257]}, "printable strings"),
        ({"tags": [{"x": 1}]}, "printable strings"),
        ({"Secret": "typo"}, "unknown keys"),
    ],
)
def test_invalid_entries_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(EndpointsError, match=message) as caught:
        parse_endpoints(doc({**GOOD, **change}))
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{}", "a JSON list"),
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[" * 100000 + b"]" * 100000, "not JSON"),
        (b"[1]", "not an object"),
        (doc(GOOD, GOOD), "listed twice"),
        (doc({"url": "https://x.example/"}), "missing name"),
        (b" " * (MAX_FILE_BYTES + 1), "more than"),
    ],
)
def test_invalid_files_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(EndpointsError, match=message):
        parse_endpoints(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.sampled_from(sorted(GOOD) + ["tags", "other"]), json_values, max_size=8))
def test_any_entry_parses_or_is_refused_cleanly(entry: dict[str, Any]) -> None:
    try:
        endpoints = parse_endpoints(doc({**GOOD, **entry}))
    except EndpointsError as exc:
        assert SECRET not in str(exc)
    else:
        (endpoint,) = endpoints.values()
        assert endpoint.url.startswith(("http://", "https://"))
        assert len(endpoint.key) >= 24


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_are_refused_cleanly(data: bytes) -> None:
    try:
        parse_endpoints(data)
    except EndpointsError:
        pass


def test_the_file_is_re_read_and_the_last_good_list_kept(tmp_path: Path) -> None:
    path = tmp_path / "webhooks.json"
    unset = EndpointsFile(None)
    assert not unset.refresh() and not unset.loaded
    missing = EndpointsFile(path)
    assert not missing.refresh() and not missing.loaded and missing.endpoints == {}
    path.write_bytes(doc(GOOD))
    assert missing.refresh() and missing.loaded and list(missing.endpoints) == ["billing"]
    assert not missing.refresh(), "unchanged content is not parsed again"
    path.write_bytes(b"[{broken")
    assert not missing.refresh()
    assert list(missing.endpoints) == ["billing"], "the last good list is kept"
    path.write_bytes(doc({**GOOD, "name": "renamed"}))
    assert missing.refresh() and list(missing.endpoints) == ["renamed"]
    path.unlink()
    assert not missing.refresh() and list(missing.endpoints) == ["renamed"]


def test_a_secret_mount_symlink_swap_is_seen(tmp_path: Path) -> None:
    # Kubernetes updates a mounted Secret by pointing ..data at a new directory
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "webhooks.json").write_bytes(doc(GOOD))
    (tmp_path / "..data").symlink_to("v1")
    (tmp_path / "webhooks.json").symlink_to("..data/webhooks.json")
    endpoints = EndpointsFile(tmp_path / "webhooks.json")
    assert endpoints.refresh() and list(endpoints.endpoints) == ["billing"]
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "webhooks.json").write_bytes(doc({**GOOD, "name": "v2"}))
    (tmp_path / "..data_tmp").symlink_to("v2")
    (tmp_path / "..data_tmp").replace(tmp_path / "..data")
    assert endpoints.refresh() and list(endpoints.endpoints) == ["v2"]
