"""The generated protobuf code is what `make proto` produces from proto/ today."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
GENERATED = ROOT / "services/common/src/kubemta/v1"


def test_generated_code_matches_proto_sources(tmp_path: Path) -> None:
    plugin_dir = Path(sys.executable).parent
    assert shutil.which("protoc-gen-mypy", path=str(plugin_dir)), "mypy-protobuf plugin missing from the venv"
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            "proto",
            f"--python_out={tmp_path}",
            f"--mypy_out={tmp_path}",
            f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
            *protos,
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "kubemta/v1").iterdir() if p.is_file()}
    committed = {name: (GENERATED / name).read_bytes() for name in fresh if (GENERATED / name).exists()}
    stale = sorted(name for name in fresh if committed.get(name) != fresh[name])
    assert not stale, f"generated code is stale, run `make proto`: {stale}"
