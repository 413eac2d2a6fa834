"""One ``APIRouter`` per resource; :func:`xlqa.server.app.create_app` includes them all."""
