"""Generates `pkg/skillfactory/v1` (messages, type stubs, gRPC stubs) from `proto/skillfactory/v1`.

Run `make proto` (or `python -m skillfactory.contracts.codegen`) after editing a .proto file; a
test regenerates into a temporary folder and fails when the checked-in code differs.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
PROTO_ROOT = REPO_ROOT / "proto"
PACKAGE_ROOT = REPO_ROOT / "pkg"
GENERATED_PACKAGE = Path("skillfactory") / "v1"
INIT_TEXT = '"""Generated from proto/skillfactory/v1 by `make proto`; do not edit."""\n'


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """The .proto sources, relative to `proto_root`, in a stable order."""
    return sorted(
        p.relative_to(proto_root) for p in (proto_root / GENERATED_PACKAGE).glob("*.proto")
    )


def generate(out_root: Path = PACKAGE_ROOT, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Compile every .proto into `out_root/skillfactory/v1`; returns the files written."""
    from grpc_tools import protoc  # dev/test dependency (grpcio-tools), not needed at run time

    out_dir = out_root / GENERATED_PACKAGE
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*_pb2*"):
        stale.unlink()
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str(p) for p in proto_files(proto_root)),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    (out_dir / "__init__.py").write_text(INIT_TEXT)
    return sorted(out_dir.iterdir())


if __name__ == "__main__":
    written = generate()
    print(f"generated {len(written)} files in {PACKAGE_ROOT / GENERATED_PACKAGE}", file=sys.stderr)
