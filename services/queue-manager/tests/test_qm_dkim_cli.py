"""`kubemta-admin dkim generate`: key files in the Secret layout (the private `.key` and the public `.pub`)
and the DNS TXT record it prints."""

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kubemta_mail_auth.dkim import records
from kubemta_mail_auth.dkim.keys import Algorithm, parse_key
from kubemta_mail_auth.dkim.public_keys import parse_public_key
from kubemta_queue_manager import __main__ as entry
from kubemta_queue_manager import dkim_cli

CONSOLE_SCRIPT = Path(sys.executable).with_name("kubemta-admin")


@pytest.mark.parametrize(
    ("algorithm", "expected"), [("rsa", Algorithm.RSA_SHA256), ("ed25519", Algorithm.ED25519_SHA256)]
)
def test_console_script_writes_the_key_0600_its_public_key_0644_and_prints_the_record(
    tmp_path: Path, algorithm: str, expected: Algorithm
) -> None:
    argv = ["dkim", "generate", "--domain", "Example.COM.", "--selector", "s2026", "--algorithm", algorithm]
    done = subprocess.run(
        [str(CONSOLE_SCRIPT), *argv, "--keys-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        umask=0o077,  # the .pub is 0644 whatever the umask
    )
    key_file = tmp_path / "example.com" / "s2026.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert parse_key(key_file.read_bytes())[0] is expected
    line = done.stdout.strip()
    assert re.fullmatch(r's2026\._domainkey\.example\.com\. IN TXT \( ("[^"]*" ?)+\)', line)
    value = "".join(re.findall(r'"([^"]*)"', line))
    assert value.startswith(f"v=DKIM1; k={algorithm}; p=")
    public_file = tmp_path / "example.com" / "s2026.pub"
    assert stat.S_IMODE(public_file.stat().st_mode) == 0o644
    assert public_file.read_text() == value + "\n"  # the record value, on one line
    assert parse_public_key(public_file.read_bytes()) == records.public_key(key_file.read_bytes())
    assert sorted(os.listdir(tmp_path / "example.com")) == ["s2026.key", "s2026.pub"]


def test_rsa_record_is_split_into_strings_of_at_most_255_octets(tmp_path: Path, dkim_zone) -> None:
    line = dkim_zone.generate("example.com", "r1", "rsa")
    strings = re.findall(r'"([^"]*)"', line)
    assert len(strings) == 2
    assert all(len(text.encode()) <= dkim_cli.TXT_STRING_LIMIT for text in strings)
    assert len(strings[0]) == dkim_cli.TXT_STRING_LIMIT


def test_txt_strings_cut_at_the_limit() -> None:
    assert records.txt_strings("a" * 600) == ["a" * 255, "a" * 255, "a" * 90]
    assert records.txt_strings("a" * 255) == ["a" * 255]


def test_an_existing_key_is_never_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["dkim", "generate", "--domain", "example.com", "--selector", "e1", "--algorithm", "ed25519"]
    assert dkim_cli.main([*argv, "--keys-dir", str(tmp_path)]) == 0
    files = [tmp_path / "example.com" / "e1.key", tmp_path / "example.com" / "e1.pub"]
    before = [path.read_bytes() for path in files]
    assert dkim_cli.main([*argv, "--keys-dir", str(tmp_path)]) == 1
    assert "e1.pub exists" in capsys.readouterr().err
    assert [path.read_bytes() for path in files] == before
    files[1].unlink()  # the .key alone still blocks: a new key never replaces the one that signs
    assert dkim_cli.main([*argv, "--keys-dir", str(tmp_path)]) == 1
    assert "e1.key exists" in capsys.readouterr().err
    assert files[0].read_bytes() == before[0] and not files[1].exists()


def test_an_existing_public_key_blocks_before_a_private_key_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "example.com").mkdir()
    (tmp_path / "example.com" / "e1.pub").write_text("v=DKIM1; k=ed25519; p=old\n")
    argv = ["dkim", "generate", "--domain", "example.com", "--selector", "e1", "--algorithm", "ed25519"]
    assert dkim_cli.main([*argv, "--keys-dir", str(tmp_path)]) == 1
    assert "e1.pub exists" in capsys.readouterr().err
    assert os.listdir(tmp_path / "example.com") == ["e1.pub"]
    assert (tmp_path / "example.com" / "e1.pub").read_text() == "v=DKIM1; k=ed25519; p=old\n"


def test_keys_dir_defaults_to_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEMTA_DKIM_KEYS_DIR", str(tmp_path))
    assert (
        dkim_cli.main(["dkim", "generate", "--domain", "example.com", "--selector", "e1", "--algorithm", "ed25519"])
        == 0
    )
    assert (tmp_path / "example.com" / "e1.key").exists()


def test_missing_keys_dir_and_bad_names_are_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KUBEMTA_DKIM_KEYS_DIR", raising=False)
    assert dkim_cli.main(["dkim", "generate", "--domain", "example.com", "--selector", "s"]) == 1
    assert "KUBEMTA_DKIM_KEYS_DIR" in capsys.readouterr().err
    argv = ["dkim", "generate", "--domain", "../etc", "--selector", "s", "--keys-dir", str(tmp_path)]
    assert dkim_cli.main(argv) == 1
    assert "invalid domain" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_the_service_main_does_not_take_dkim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dkim` is `kubemta-admin dkim` (services/admin): the service's parser refuses it as any unknown argument."""
    argv = ["kubemta-queue-manager", "dkim", "generate", "--domain", "example.com", "--selector", "e1"]
    monkeypatch.setattr(sys, "argv", [*argv, "--algorithm", "ed25519", "--keys-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        entry.main()
    assert exit_info.value.code == 2
    assert "unrecognized arguments: dkim generate" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
