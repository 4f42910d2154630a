"""Regenerate the Python code for protos/ into server/ (the one way to do it).

    python scripts/gen_protos.py          # write server/imgate/v1/*_pb2*.py[i]
    python scripts/gen_protos.py --check  # exit 1 when the committed code is stale

Generated files are never edited by hand. The generator versions are pinned exactly in
pyproject's `dev` extra so that the check is reproducible on a fresh machine.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc_tools

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT_ROOT = ROOT / "server"
# protos/google/api: the google.api.http annotation, copied unchanged from
# googleapis-common-protos so that every toolchain finds it under -I protos; its Python
# code is that package's (google.api.annotations_pb2), never generated here.
VENDORED = ("google",)
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out_dir: Path) -> list[Path]:
    """Run protoc over every .proto under protos/ and return the files it wrote."""
    protos = sorted(
        p.relative_to(PROTO_ROOT)
        for p in PROTO_ROOT.rglob("*.proto")
        if p.relative_to(PROTO_ROOT).parts[0] not in VENDORED
    )
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    plugin_dir = Path(sys.executable).parent
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *map(str, protos),
    ]
    subprocess.run(cmd, check=True, cwd=PROTO_ROOT)
    return sorted(p for p in out_dir.rglob("*") if p.name.endswith(GENERATED_SUFFIXES))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        stale = []
        for path in fresh:
            rel = path.relative_to(tmp)
            target = OUT_ROOT / rel
            if args.check:
                if not target.exists() or not filecmp.cmp(path, target, shallow=False):
                    stale.append(str(rel))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
    if stale:
        print("generated code is stale; run: python scripts/gen_protos.py", file=sys.stderr)
        for name in stale:
            print(f"  {name}", file=sys.stderr)
        return 1
    print("generated code is up to date" if args.check else f"wrote {len(fresh)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
