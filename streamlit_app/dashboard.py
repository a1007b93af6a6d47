"""The dashboard's server: Streamlit's own (``app.py``, the page) with one route more,
the live prices' push (``push.py``). ``finpipe-dashboard`` (``serve.py``) runs it with
``streamlit run``, which finds ``app`` below and serves it with uvicorn, as it serves a
plain script; the options of ``streamlit run`` apply the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import streamlit as st
from starlette.routing import Route

from streamlit_app.push import PUSH_PATH, end_streams_on_exit, live_prices


@asynccontextmanager
async def lifespan(_app: st.App) -> AsyncIterator[None]:
    # A page's open stream would hold a stopping server up for good (make down, Compose).
    end_streams_on_exit()
    yield


app = st.App("app.py", routes=[Route(PUSH_PATH, live_prices)], lifespan=lifespan)
