"""The HTTP service (``xlqa serve``): the answer API, runs and jobs for the dashboard, and the dashboard itself.

:func:`xlqa.server.app.create_app` builds the FastAPI app from a :class:`xlqa.config.ServeConfig`; one
``APIRouter`` per resource lives in :mod:`xlqa.server.routes`. Routes call the same library functions as the
command line (:mod:`xlqa.jobs`, :mod:`xlqa.runs`, :mod:`xlqa.train.control`).
"""
