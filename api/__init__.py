"""importd's HTTP front door: a thin Starlette app (``uvicorn api.app:app``)."""
