"""`python -m skillfactory.cluster.supervise DIR …`: the local cluster's supervisor process
(started by `skillfactory up`; see `skillfactory.cluster.local`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from skillfactory.cluster.local import ClusterConfig, supervise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skillfactory.cluster.supervise")
    parser.add_argument("dir", type=Path)
    parser.add_argument("--samplers", type=int, default=2)
    parser.add_argument("--claim-idle-ms", type=int, default=60_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="")
    parser.add_argument("--grace-s", type=float, default=30.0)
    parser.add_argument("--simulated-token-delay-ms", type=float, default=0.0)
    parser.add_argument("--learner-procs", type=int, default=1)
    args = parser.parse_args(argv)
    config = ClusterConfig(
        dir=args.dir,
        samplers=args.samplers,
        claim_idle_ms=args.claim_idle_ms,
        threads=args.threads,
        model=args.model,
        grace_s=args.grace_s,
        simulated_token_delay_ms=args.simulated_token_delay_ms,
        learner_procs=args.learner_procs,
    )
    return supervise(config)


if __name__ == "__main__":
    sys.exit(main())
