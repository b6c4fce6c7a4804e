"""The reward service entrypoint: `python services/reward [OPTIONS]` runs what
`skillfactory serve reward [OPTIONS]` runs (batch grading with the task graders).

No logic lives here; see `skillfactory.serving.reward` and `skillfactory.cli.serve`.
"""

import typer

from skillfactory.cli.serve import serve_reward

if __name__ == "__main__":
    typer.run(serve_reward)
