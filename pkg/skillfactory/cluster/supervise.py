"""`python -m skillfactory.cluster.supervise DIR/config.json`: the local cluster's supervisor process
(started by `skillfactory up` with the `ClusterConfig` it wrote; see `skillfactory.cluster.local`)."""

from __future__ import annotations

import sys
from pathlib import Path

from skillfactory.cluster.local import ClusterConfig, supervise


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if len(arguments) != 1:
        print("usage: python -m skillfactory.cluster.supervise DIR/config.json", file=sys.stderr)
        return 2
    return supervise(ClusterConfig.from_json(Path(arguments[0]).read_text()))


if __name__ == "__main__":
    sys.exit(main())
