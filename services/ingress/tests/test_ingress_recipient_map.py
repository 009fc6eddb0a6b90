"""Recipient maps (recipient_map.py): the file format, Postfix' case rules, the recipient delimiter,
re-reading a changed file (as the kubelet swaps a ConfigMap), and the settings that name the files."""

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubemta_common.errors import ConfigError
from kubemta_ingress.recipient_map import RecipientMap, parse_entries, parse_recipient_maps
from kubemta_ingress.settings import IngressSettings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def replace_file(path: Path, text: str) -> None:
    """Write `text` to a new file and rename it over `path` (atomic, a new inode, as the kubelet does)."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text, encoding="utf-8")
    os.replace(fresh, path)


def test_the_file_format_takes_addresses_local_parts_comments_and_postfix_maps() -> None:
    entries, skipped = parse_entries(
        [
            "# valid recipients of example.org\n",
            "alice@example.org\n",
            "   bob   \n",
            "\n",
            "carol@EXAMPLE.ORG.  OK\n",  # a Postfix map line: the value after the key is ignored
            '"john smith"@example.org\n',
            '"odd@part"\n',
            "mallory@other.example\n",  # another domain: skipped
            "@example.org\n",  # empty local part: skipped
        ],
        "example.org",
    )
    assert entries == {"alice", "bob", "carol", "john smith", "odd@part"}
    assert len(skipped) == 2 and "other.example" in skipped[0]


def test_lookups_are_case_insensitive_as_in_postfix(tmp_path: Path) -> None:
    path = tmp_path / "example.org"
    path.write_text('Alice\nstraße\n"John Smith"\n', encoding="utf-8")
    recipients = RecipientMap("example.org", path)
    for local in ("alice", "ALICE", "aLiCe", "STRASSE", "strasse", "Straße", '"john smith"', '"JOHN SMITH"'):
        assert recipients.contains(local), local
    for local in ("alicex", "bob", "john smith2", "alice+news"):
        assert not recipients.contains(local), local


def test_the_recipient_delimiter_finds_the_base_local_part(tmp_path: Path) -> None:
    path = tmp_path / "example.org"
    path.write_text("alice\n", encoding="utf-8")
    recipients = RecipientMap("example.org", path, delimiter="+-")
    assert recipients.contains("alice+news") and recipients.contains("Alice-lists")
    assert not recipients.contains("+alice") and not recipients.contains("bob+alice")


def test_a_changed_file_is_read_again_after_the_check_interval(tmp_path: Path) -> None:
    path = tmp_path / "example.org"
    path.write_text("alice\n", encoding="utf-8")
    clock = Clock()
    recipients = RecipientMap("example.org", path, check_interval=5.0, clock=clock)
    assert recipients.contains("alice") and not recipients.contains("bob")

    replace_file(path, "bob\n")
    clock.now += 1.0
    assert recipients.contains("alice")  # not checked yet
    clock.now += 5.0
    assert recipients.contains("bob") and not recipients.contains("alice")


def test_a_configmap_style_symlink_swap_is_noticed(tmp_path: Path) -> None:
    # The kubelet's layout: example.org -> ..data/example.org, ..data -> ..2024_01_01 (swapped atomically).
    first, second = tmp_path / "..v1", tmp_path / "..v2"
    first.mkdir()
    second.mkdir()
    (first / "example.org").write_text("alice\n", encoding="utf-8")
    (second / "example.org").write_text("bob\n", encoding="utf-8")
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "example.org").symlink_to("..data/example.org")
    recipients = RecipientMap("example.org", tmp_path / "example.org", check_interval=0)
    assert recipients.contains("alice")

    (tmp_path / "..data.tmp").symlink_to(second.name)
    os.replace(tmp_path / "..data.tmp", tmp_path / "..data")
    assert recipients.contains("bob") and not recipients.contains("alice")


def test_a_file_that_breaks_later_keeps_the_last_good_content(tmp_path: Path) -> None:
    path = tmp_path / "example.org"
    path.write_text("alice\n", encoding="utf-8")
    recipients = RecipientMap("example.org", path, check_interval=0)
    path.unlink()
    assert recipients.contains("alice")
    path.write_bytes(b"\xff\xfe not utf-8\n")
    assert recipients.contains("alice")
    replace_file(path, "carol\n")
    assert recipients.contains("carol") and not recipients.contains("alice")


def test_a_file_that_cannot_be_read_at_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        RecipientMap("example.org", tmp_path / "missing")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "Example.ORG=/etc/kubemta/recipients/example.org",
            {"example.org": Path("/etc/kubemta/recipients/example.org")},
        ),
        ("bücher.example=/maps/b", {"xn--bcher-kva.example": Path("/maps/b")}),
    ],
)
def test_map_settings_parse(value: str, expected: dict[str, Path]) -> None:
    assert parse_recipient_maps([value]) == expected


@pytest.mark.parametrize(
    "value",
    ["example.org", "example.org=relative/path", "=/maps/x", "[192.0.2.1]=/maps/x", "example.org=/a,example.org=/b"],
)
def test_bad_map_settings_stop_the_start(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("KUBEMTA_RECIPIENT_MAPS", value)
    with pytest.raises(ConfigError, match="KUBEMTA_RECIPIENT_MAPS"):
        IngressSettings.load()


def test_bad_transports_stop_the_ingress_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEMTA_TRANSPORTS", "example.org=lmtp:unix:relative")
    with pytest.raises(ConfigError, match="KUBEMTA_TRANSPORTS"):
        IngressSettings.load()


@given(st.lists(st.text(max_size=80), max_size=30))
def test_any_file_content_parses_without_error(lines: list[str]) -> None:
    entries, _ = parse_entries(lines, "example.org")
    assert all(entry == entry.casefold() for entry in entries)
