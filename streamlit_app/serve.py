"""Starts the dashboard: ``streamlit run streamlit_app/app.py`` with the page's libraries
imported first (``finpipe-dashboard [streamlit options]``; ``make up`` and
docker-compose.yml start it this way).

Streamlit runs ``app.py`` only when the first browser session connects, so the first page
of a new process also waited for pandas, DuckDB, pyarrow, plotly and obstore to import
(about 2 s on this project's 2-core machine, ``docs/benchmarks/dashboard.md``). Imported
here, before the server starts, they cost nothing at that first page: the script's
imports find them in ``sys.modules``. Options after the command go to ``streamlit run``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The page's modules and, through them, its heavy libraries: imported for their side
# effect of being loaded; the script imports them again by name.
import streamlit_app.analytics
import streamlit_app.charts
import streamlit_app.status
import streamlit_app.store
import streamlit_app.windows  # noqa: F401

APP = Path(__file__).with_name("app.py")


def main(argv: list[str] | None = None) -> None:
    """Runs the server until it stops; exits the process with Streamlit's status."""
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(APP), *(sys.argv[1:] if argv is None else argv)]
    cli.main(prog_name="streamlit")


if __name__ == "__main__":
    main()
