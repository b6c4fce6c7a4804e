"""The composer service entrypoint: `python services/composer --data-root D [OPTIONS]` runs what
`skillfactory serve composer --data-root D [OPTIONS]` runs (stage-1 verdict filter and trace
assembly, writing datasets under the data root).

No logic lives here; see `skillfactory.serving.composer` and `skillfactory.cli.serve_composer`.
"""

import typer

from skillfactory.cli.serve_composer import serve_composer

if __name__ == "__main__":
    typer.run(serve_composer)
