"""The dashboard's server: Streamlit's own (``app.py``, the page) with one route more,
the live prices' push (``push.py``). ``finpipe-dashboard`` (``serve.py``) runs it with
``streamlit run``, which finds ``app`` below and serves it with uvicorn, as it serves a
plain script; the options of ``streamlit run`` apply the same.
"""

from __future__ import annotations

import streamlit as st
from starlette.routing import Route

from streamlit_app.push import PUSH_PATH, live_prices

app = st.App("app.py", routes=[Route(PUSH_PATH, live_prices)])
