"""`kubemta-admin api-keys` (api_keys_cli.py): create prints the key once and alone, the printed key verifies and
stops verifying once removed or rotated, `--keep-old` keeps the old key as the same principal, the file is written
atomically with mode 0600 keeping comments, bad input and broken files are refused, and no command prints a hash."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kubemta_ingress import api_keys_cli
from kubemta_ingress.api_auth import Principal
from kubemta_ingress.api_keys import ApiKeysFile, ApiKeyVerifier, parse_api_keys
from kubemta_ingress.users import Identity

KEY = re.compile(r"kmta_[0-9a-f]{12}_[A-Za-z0-9_-]{43}\n\Z")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Cli:
    """Runs `api-keys` commands in-process and remembers every output, to check no hash was ever printed."""

    def __init__(self, path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.path = path
        self.capsys = capsys
        self.printed: list[str] = []

    def __call__(self, *args: str, file: bool = True) -> tuple[int, str, str]:
        code = api_keys_cli.main(["api-keys", *args, *(("--file", str(self.path)) if file else ())])
        captured = self.capsys.readouterr()
        self.printed += [captured.out, captured.err]
        return code, captured.out, captured.err

    def digests(self) -> list[str]:
        return [key.digest.hex() for key in parse_api_keys(self.path.read_text(encoding="utf-8")).by_name.values()]

    def assert_no_hash_printed(self, digests: list[str]) -> None:
        for digest in digests:
            for text in self.printed:
                assert digest not in text and digest.upper() not in text


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    path = tmp_path / "keys"
    path.write_text("# kubemta API keys\n", encoding="utf-8")
    return Cli(path, capsys)


async def verifies(verifier: ApiKeyVerifier, clock: Clock, token: str) -> Principal | None:
    clock.now += 10  # past the check interval: the file is looked at again
    return await verifier.verify(token)


async def test_create_verify_list_show_remove_round_trip(cli):
    code, out, err = cli("create", "app", "--identity", "App@Example.com", "--identity", "example.org")
    assert code == 0 and KEY.match(out), out  # the key, alone, on stdout
    token = out.strip()
    assert "shown once" in err and token not in err and "keyid" in err
    assert cli.path.stat().st_mode & 0o777 == 0o600
    text = cli.path.read_text(encoding="utf-8")
    assert text.startswith("# kubemta API keys\napp:" + token[5:17] + ":sha256:") and token[18:] not in text

    clock = Clock()
    verifier = ApiKeyVerifier(ApiKeysFile(cli.path, clock=clock))
    identities = (Identity.parse("app@example.com"), Identity.parse("example.org"))
    assert await verifies(verifier, clock, token) == Principal("api-key", "apikey:app", identities)

    code, out, _ = cli("list")
    assert code == 0 and out == f"app\t{token[5:17]}\tapp@example.com,example.org\n"
    code, out, _ = cli("show", "app")
    assert code == 0 and f"keyid: {token[5:17]}\n" in out and "principal: apikey:app\n" in out
    digests = cli.digests()

    code, out, _ = cli("remove", "app")
    assert code == 0 and out == "removed app\n"
    assert cli.path.read_text(encoding="utf-8") == "# kubemta API keys\n"
    os.utime(cli.path, ns=(1, 1))
    assert await verifies(verifier, clock, token) is None
    code, _, err = cli("remove", "app")
    assert code == 2 and "no key 'app'" in err
    cli.assert_no_hash_printed(digests)


async def test_rotate_replaces_the_key_and_keep_old_keeps_it_as_the_same_principal(cli):
    first = cli("create", "app", "--identity", "example.com")[1].strip()
    cli("create", "other", "--identity", "example.net")
    clock = Clock()
    verifier = ApiKeyVerifier(ApiKeysFile(cli.path, clock=clock))
    seen = cli.digests()

    code, out, err = cli("rotate", "app")
    assert code == 0 and KEY.match(out) and "shown once" in err
    second = out.strip()
    assert second != first
    os.utime(cli.path, ns=(1, 1))
    assert await verifies(verifier, clock, first) is None
    principal = await verifies(verifier, clock, second)
    assert principal is not None and principal.name == "apikey:app" and str(principal.identities[0]) == "example.com"
    seen += cli.digests()

    code, out, err = cli("rotate", "app", "--keep-old", "--identity", "example.org")
    assert code == 0 and KEY.match(out) and "app~old" in err
    third = out.strip()
    os.utime(cli.path, ns=(2, 2))
    old, new = await verifies(verifier, clock, second), await verifies(verifier, clock, third)
    assert old is not None and new is not None and old.name == new.name == "apikey:app"
    assert [str(i) for i in old.identities] == ["example.com"] and [str(i) for i in new.identities] == ["example.org"]
    names = [line.split(":")[0] for line in cli.path.read_text(encoding="utf-8").splitlines()]
    assert names == ["# kubemta API keys", "app", "app~old", "other"]
    code, out, _ = cli("show", "app")
    assert f"old keyid: {second[5:17]}" in out
    seen += cli.digests()

    code, _, err = cli("rotate", "app", "--keep-old")
    assert code == 2 and "app~old exists" in err
    assert cli("remove", "app~old")[0] == 0
    os.utime(cli.path, ns=(3, 3))
    assert await verifies(verifier, clock, second) is None
    assert await verifies(verifier, clock, third) is not None
    code, _, err = cli("rotate", "nobody")
    assert code == 2 and "no key 'nobody'" in err
    cli.assert_no_hash_printed(seen)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "bad:name", "--identity", "example.com"), "invalid key name"),
        (("create", "app~old", "--identity", "example.com"), "invalid key name"),
        (("create", "", "--identity", "example.com"), "invalid key name"),
        (("create", "app2", "--identity", "exa_mple.com"), "malformed identity"),
        (("create", "app", "--identity", "example.com"), "a key named 'app' exists"),
        (("show", "nobody"), "no key 'nobody'"),
        (("rotate", "app", "--identity", "not an@address"), "malformed identity"),
    ],
)
def test_bad_input_is_refused_and_the_file_left_alone(cli, args, message):
    cli("create", "app", "--identity", "example.com")
    before = cli.path.read_text(encoding="utf-8")
    code, out, err = cli(*args)
    assert code == 2 and message in err and out == ""
    assert cli.path.read_text(encoding="utf-8") == before


def test_usage_errors_exit_2(cli):
    with pytest.raises(SystemExit) as caught:
        cli("create", "app")  # --identity is required
    assert caught.value.code == 2
    with pytest.raises(SystemExit) as caught:
        cli("bogus")
    assert caught.value.code == 2


def test_a_broken_file_is_not_edited_and_its_hash_not_shown(cli):
    digest = "ab" * 32
    broken = f"# keys\nold:0123456789ab:sha256:{digest}:exa_mple.com\n"
    cli.path.write_text(broken, encoding="utf-8")
    for args in (("create", "app", "--identity", "example.com"), ("list",), ("remove", "old"), ("show", "old")):
        code, out, err = cli(*args)
        assert code == 2 and "line 2" in err and out == "", args
    cli.path.write_bytes(b"\xff\xfe")
    code, _, err = cli("list")
    assert code == 2 and "not UTF-8" in err
    cli.assert_no_hash_printed([digest])
    assert cli.path.read_bytes() == b"\xff\xfe"


def test_the_file_comes_from_the_environment_and_create_makes_it(tmp_path, monkeypatch, capsys):
    path = tmp_path / "new-keys"
    cli = Cli(path, capsys)
    monkeypatch.setenv("KUBEMTA_API_KEYS_FILE", str(path))
    code, out, _ = cli("create", "app", "--identity", "example.com", file=False)
    assert code == 0 and KEY.match(out) and path.stat().st_mode & 0o777 == 0o600
    assert cli("list", file=False)[1].startswith("app\t")
    monkeypatch.delenv("KUBEMTA_API_KEYS_FILE")
    code, _, err = cli("list", file=False)
    assert code == 2 and "KUBEMTA_API_KEYS_FILE" in err
    code, _, err = Cli(tmp_path / "absent", capsys)("list")
    assert code == 2 and "no such file" in err


def test_console_script_create_prints_only_the_key(tmp_path):
    """`kubemta-admin api-keys ...` runs this command line; `KEY=$(kubemta-admin api-keys create ...)` works."""
    script = Path(sys.executable).parent / "kubemta-admin"
    path = tmp_path / "keys"
    env = {**os.environ, "KUBEMTA_API_KEYS_FILE": str(path)}
    created = subprocess.run(
        [script, "api-keys", "create", "app", "--identity", "example.com"],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert created.returncode == 0 and KEY.match(created.stdout), created.stderr
    verifier = ApiKeyVerifier(ApiKeysFile(path))
    principal = verifier.check(created.stdout.strip())
    assert principal is not None and principal.name == "apikey:app"
