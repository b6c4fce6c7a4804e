"""The learner service entrypoint: `python services/learner --state-dir D [OPTIONS]` runs what
`skillfactory learner serve --state-dir D [OPTIONS]` runs (the run controller and its API).

No logic lives here; see `skillfactory.serving.learner_api` and `skillfactory.cli.learner`.
"""

import typer

from skillfactory.cli.learner import serve_learner

if __name__ == "__main__":
    typer.run(serve_learner)
