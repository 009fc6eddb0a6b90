"""The users file (hashes, identities, reloading) and the `kubemta-admin users` command line."""

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubemta_common.errors import ConfigError
from kubemta_ingress import cli
from kubemta_ingress.auth import UsersAuthenticator, build_authenticator
from kubemta_ingress.settings import IngressSettings
from kubemta_ingress.users import (
    Identity,
    UsersFile,
    UsersFileError,
    hash_password,
    parse_hash,
    parse_users,
    verify_password,
)

FAST = 10  # log2 N for test hashes (the default, 14, takes ~50 ms per hash)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_hash_format_and_verification():
    stored = hash_password("correct horse", log2_n=FAST)
    assert stored.startswith(f"$scrypt$ln={FAST},r=8,p=1$")
    params = parse_hash(stored)
    assert (params.log2_n, params.r, params.p, len(params.salt), len(params.digest)) == (FAST, 8, 1, 16, 32)
    assert verify_password(b"correct horse", stored)
    assert not verify_password(b"correct horsE", stored)
    assert not verify_password(b"", stored)
    assert hash_password("correct horse", log2_n=FAST) != stored  # salted


def test_default_cost_is_a_modern_kdf_setting():
    params = parse_hash(hash_password("x"))
    assert (params.log2_n, params.r, params.p) == (14, 8, 1)


@pytest.mark.parametrize(
    "hash_text",
    [
        "secret",  # plain text
        "{PLAIN}secret",
        "$6$salt$abcdefabcdef",  # sha512-crypt
        "$2b$12$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234",  # bcrypt
        "$scrypt$ln=14,r=8,p=1$c2FsdA==",  # no hash
        "$scrypt$ln=40,r=8,p=1$c2FsdA==$" + "A" * 44,  # absurd cost
        "$scrypt$ln=14,r=8,p=1$!!!$" + "A" * 44,
    ],
)
def test_other_hash_formats_are_refused_naming_the_line_not_the_secret(hash_text):
    text = f"# users\n\nok:{hash_password('pw', log2_n=FAST)}:example.com\nbad:{hash_text}:example.com\n"
    with pytest.raises(UsersFileError) as caught:
        parse_users(text)
    assert "line 4" in str(caught.value) and "bad" in str(caught.value)
    assert hash_text not in str(caught.value)


def test_identities_comments_and_blank_lines():
    stored = hash_password("pw", log2_n=FAST)
    users = parse_users(f"# comment\n\n  app : {stored} : App@Example.COM, @example.org ,bücher.example\n")
    assert list(users) == ["app"]
    assert [str(identity) for identity in users["app"].identities] == [
        "app@example.com",
        "example.org",
        "xn--bcher-kva.example",
    ]


@pytest.mark.parametrize(
    "line",
    [
        "app:{hash}",  # no identities field
        "app:{hash}:example.com:extra",
        "a pp:{hash}:example.com",
        ":{hash}:example.com",
        "app:{hash}:exa_mple.com",
        "app:{hash}:user@",
        "app:{hash}:example.com.",
        "app:{hash}:example.ｃｏｍ",
        "app:{hash}:a@b@example.com",
    ],
)
def test_malformed_lines_are_refused(line):
    with pytest.raises(UsersFileError, match="line 1"):
        parse_users(line.format(hash=hash_password("pw", log2_n=FAST)))


def test_duplicate_users_are_refused():
    stored = hash_password("pw", log2_n=FAST)
    with pytest.raises(UsersFileError, match="duplicate"):
        parse_users(f"app:{stored}:example.com\napp:{stored}:example.org\n")


@pytest.mark.parametrize(
    ("text", "address", "domain"),
    [
        ("app@example.com", "app@example.com", "example.com"),
        ("@example.com", None, "example.com"),
        ("EXAMPLE.com", None, "example.com"),
        ("App@Bücher.Example", "app@xn--bcher-kva.example", "xn--bcher-kva.example"),
    ],
)
def test_identity_parsing(text, address, domain):
    assert Identity.parse(text) == Identity(address, domain)


def write_users(path: Path, **users: tuple[str, str]) -> None:
    path.write_text(
        "".join(f"{name}:{hash_password(pw, log2_n=FAST)}:{ids}\n" for name, (pw, ids) in users.items()),
        encoding="utf-8",
    )


def test_missing_users_file_at_start_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="KUBEMTA_USERS_FILE"):
        UsersFile(tmp_path / "absent")


def test_malformed_users_file_at_start_is_a_config_error_without_the_secret(tmp_path):
    path = tmp_path / "users"
    path.write_text("app:hunter2:example.com\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        UsersFile(path)
    assert "line 1" in str(caught.value) and "hunter2" not in str(caught.value)


def test_reload_after_change_within_the_check_interval(tmp_path):
    path = tmp_path / "users"
    write_users(path, app=("one", "example.com"))
    clock = Clock()
    users = UsersFile(path, check_interval=2.0, clock=clock)
    write_users(path, app=("two", "example.com"), other=("x", "example.org"))
    os.utime(path, ns=(1, 1))  # a different modification time, whatever the file system's granularity
    assert set(users.users) == {"app"}  # not looked at yet
    clock.now += 2.5
    assert set(users.users) == {"app", "other"}
    app = users.get("app")
    assert app is not None and verify_password(b"two", app.password_hash)


def test_a_broken_file_keeps_the_last_good_version_and_logs_once(tmp_path, caplog):
    path = tmp_path / "users"
    write_users(path, app=("one", "example.com"))
    clock = Clock()
    users = UsersFile(path, clock=clock)
    path.write_text("app:plaintextpassword:example.com\n", encoding="utf-8")
    os.utime(path, ns=(2, 2))
    clock.now += 10
    with caplog.at_level(logging.ERROR, logger="kubemta_ingress.users"):
        assert set(users.users) == {"app"}
        clock.now += 10
        assert set(users.users) == {"app"}
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1 and "line 1" in errors[0].getMessage()
    assert "plaintextpassword" not in caplog.text
    path.unlink()  # a vanished file keeps the last good version too
    clock.now += 10
    assert set(users.users) == {"app"}
    write_users(path, fixed=("pw", "example.com"))
    clock.now += 10
    assert set(users.users) == {"fixed"}


def test_build_authenticator(tmp_path):
    settings = IngressSettings()
    assert build_authenticator(settings) is None
    path = tmp_path / "users"
    write_users(path, app=("pw", "example.com"))
    settings = IngressSettings(users_file=path)
    assert isinstance(build_authenticator(settings), UsersAuthenticator)
    with pytest.raises(ConfigError):
        build_authenticator(IngressSettings(users_file=tmp_path / "none"))


# -- command line ---------------------------------------------------------------------------------------------


def run_cli(monkeypatch, capsys, *args: str, stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = cli.main(["users", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_add_list_verify_remove(tmp_path, monkeypatch, capsys):
    path = tmp_path / "users"
    path.write_text("# kubemta users\n", encoding="utf-8")
    file = ("--file", str(path))
    code, out, _ = run_cli(
        monkeypatch, capsys, "add", "app", "--identity", "app@example.com", "--identity", "example.org", *file,
        stdin="s3cret\n",
    )  # fmt: skip
    assert code == 0 and "added app" in out
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# kubemta users\napp:$scrypt$ln=14,") and "s3cret" not in text
    assert verify_password(b"s3cret", parse_users(text)["app"].password_hash)

    code, out, _ = run_cli(monkeypatch, capsys, "list", *file)
    assert code == 0 and out == "app\tapp@example.com,example.org\n" and "$scrypt$" not in out

    assert run_cli(monkeypatch, capsys, "verify", "app", "--password-stdin", *file, stdin="s3cret\n")[0] == 0
    assert run_cli(monkeypatch, capsys, "verify", "app", *file, stdin="wrong\n")[0] == 1
    assert run_cli(monkeypatch, capsys, "verify", "nobody", *file, stdin="s3cret\n")[0] == 1

    code, out, _ = run_cli(monkeypatch, capsys, "add", "app", "--identity", "example.net", *file, stdin="new\n")
    assert code == 0 and "updated app" in out
    users = parse_users(path.read_text(encoding="utf-8"))
    assert [str(i) for i in users["app"].identities] == ["example.net"]
    assert verify_password(b"new", users["app"].password_hash)

    assert run_cli(monkeypatch, capsys, "remove", "app", *file)[0] == 0
    assert path.read_text(encoding="utf-8") == "# kubemta users\n"
    code, _, err = run_cli(monkeypatch, capsys, "remove", "app", *file)
    assert code == 2 and "no user" in err


def test_cli_uses_the_environment_and_refuses_bad_input(tmp_path, monkeypatch, capsys):
    path = tmp_path / "users"
    monkeypatch.setenv("KUBEMTA_USERS_FILE", str(path))
    assert run_cli(monkeypatch, capsys, "add", "app", "--identity", "example.com", stdin="pw\n")[0] == 0
    assert path.exists()
    assert run_cli(monkeypatch, capsys, "add", "bad:name", "--identity", "example.com", stdin="pw\n")[0] == 2
    assert run_cli(monkeypatch, capsys, "add", "app2", "--identity", "exa_mple.com", stdin="pw\n")[0] == 2
    assert run_cli(monkeypatch, capsys, "add", "app2", "--identity", "example.com", stdin="\n")[0] == 2
    monkeypatch.delenv("KUBEMTA_USERS_FILE")
    code, _, err = run_cli(monkeypatch, capsys, "list")
    assert code == 2 and "KUBEMTA_USERS_FILE" in err


def test_cli_refuses_to_edit_a_malformed_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "users"
    path.write_text("old:plaintext:example.com\n", encoding="utf-8")
    code, _, err = run_cli(
        monkeypatch, capsys, "add", "app", "--identity", "example.com", "--file", str(path), stdin="pw\n"
    )
    assert code == 2 and "line 1" in err and "plaintext" not in err
    assert path.read_text(encoding="utf-8") == "old:plaintext:example.com\n"


def test_console_script_dispatches_users(tmp_path):
    """`kubemta-admin users ...` runs this command line."""
    script = Path(sys.executable).parent / "kubemta-admin"
    path = tmp_path / "users"
    env = {**os.environ, "KUBEMTA_USERS_FILE": str(path)}
    added = subprocess.run(
        [script, "users", "add", "app", "--identity", "example.com", "--password-stdin"],
        input="pw\n", capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    listed = subprocess.run([script, "users", "list"], capture_output=True, text=True, env=env, timeout=30, check=False)
    assert listed.returncode == 0 and listed.stdout == "app\texample.com\n"
