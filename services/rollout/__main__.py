"""The rollout service entrypoint: `python services/rollout [OPTIONS]` runs what
`skillfactory serve rollout [OPTIONS]` runs (generation with one engine, weight reloads).

No logic lives here; see `skillfactory.serving.rollout` and `skillfactory.cli.serve`.
"""

import typer

from skillfactory.cli.serve import serve_rollout

if __name__ == "__main__":
    typer.run(serve_rollout)
