"""The FastAPI application: /health, /predict, /images/{image_id} and the page at /.

Why these shapes (docs/serving.md):
- One `Predictor` per process, loaded at start-up (TensorFlow and the model cost seconds, a request
  must not); requests check, at most every `serving.reload_seconds`, whether a newer classifier was
  published (`Predictor.refreshed`: one small read and one listing) and swap it in when so. A
  reload that fails keeps the loaded predictor serving and is reported by /health.
- The upload limit is enforced on the request body as it arrives, before the multipart parser
  spools it anywhere: a 2 GB upload is refused after `serving.max_upload_bytes`, not after it was
  written to a temporary file.
- A photo the model cannot take gets 422 with the same {"photo", "error"} object as
  `python -m pipelines.predict --json`, the error being bronze's one-line reason.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from pipelines import bundle as bundles
from pipelines import features
from pipelines.config import Conf, ConfError
from pipelines.predict import PhotoError, Predictor

STATIC = Path(__file__).resolve().parent / "static"
# Room for the multipart framing (boundaries, part headers) around the one file of an upload.
MULTIPART_OVERHEAD_BYTES = 16384
_IMAGE_ID = re.compile(r"[0-9a-f]{64}")
LOAD_ERRORS = (bundles.NoClassifier, bundles.BundleError, ConfError, features.WeightsUnavailable, OSError)


class Service:
    """The loaded predictor, or why there is none, and the throttled check for a newer classifier."""

    def __init__(self, conf: Conf, load: Callable[..., Predictor] = Predictor.load, clock: Callable[[], float] = time.monotonic):
        self.conf, self._load, self._clock = conf, load, clock
        self.predictor: Predictor | None = None
        self.problem: str | None = None
        self._checked = float("-inf")
        self._lock = threading.Lock()
        self.check(force=True)

    def check(self, force: bool = False) -> Predictor | None:
        """The predictor to answer with, reloaded first when the check is due and nobody else is at it."""
        due = force or self._clock() - self._checked >= self.conf["serving.reload_seconds"]
        if due and self._lock.acquire(blocking=force):
            try:
                self._checked = self._clock()
                self.predictor = self.predictor.refreshed() if self.predictor else self._load(self.conf)
                self.problem = None
            except bundles.NoClassifier as exc:
                self.predictor, self.problem = None, str(exc)
            except LOAD_ERRORS as exc:  # a bad new bundle: keep serving the one loaded, say why
                self.problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                print(f"serving: {self.problem}", file=sys.stderr, flush=True)
            finally:
                self._lock.release()
        return self.predictor


class UploadTooLarge(Exception):
    """The request body went over the limit while it was read."""


async def limited(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """The body's chunks, raising UploadTooLarge as soon as more than `limit` bytes came."""
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > limit:
            raise UploadTooLarge
        yield chunk


def create_app(conf: Conf, service: Service | None = None) -> FastAPI:
    """The application around one Service (built from conf, i.e. loading the predictor, when not given)."""
    service = service if service is not None else Service(conf)
    max_bytes = conf["serving.max_upload_bytes"]
    app = FastAPI(title="Fruits! prediction service", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    too_large = {"error": f"the upload is larger than serving.max_upload_bytes={max_bytes} bytes: send a smaller photo"}

    @app.get("/health")
    def health() -> JSONResponse:
        predictor = service.check()
        if predictor is None:
            return JSONResponse({"status": "unavailable", "reason": service.problem}, status_code=503)
        body = {"status": "ok", **predictor.versions}
        if service.problem:
            body["reload_problem"] = service.problem
        return JSONResponse(body)

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD_BYTES:
            return JSONResponse(too_large, status_code=413)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return JSONResponse({"error": "send the photo as multipart/form-data, in a field named file"}, status_code=400)
        parser = MultiPartParser(
            request.headers, limited(request.stream(), max_bytes + MULTIPART_OVERHEAD_BYTES), max_files=1, max_fields=4
        )
        try:
            form = await parser.parse()
        except UploadTooLarge:
            return JSONResponse(too_large, status_code=413)
        except MultiPartException as exc:
            return JSONResponse({"error": f"the upload is not valid multipart/form-data: {exc.message}"}, status_code=400)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return JSONResponse({"error": "no file in the upload: send the photo in a field named file"}, status_code=400)
        try:
            content = await upload.read(max_bytes + 1)
        finally:
            await form.close()
        if len(content) > max_bytes:
            return JSONResponse(too_large, status_code=413)
        photo = upload.filename or "upload"
        predictor = await run_in_threadpool(service.check)
        if predictor is None:
            return JSONResponse({"photo": photo, "error": service.problem}, status_code=503)
        try:
            answer = await run_in_threadpool(predictor.answer, content, photo)
        except PhotoError as exc:
            return JSONResponse({"photo": photo, "error": str(exc)}, status_code=422)
        return JSONResponse(answer)

    @app.get("/images/{image_id}")
    def image(image_id: str) -> Response:
        predictor = service.check()
        if predictor is None:
            return JSONResponse({"error": service.problem}, status_code=503)
        if not _IMAGE_ID.fullmatch(image_id):
            return JSONResponse({"error": "an image id is the 64 hex digits of its sha256"}, status_code=404)
        try:
            content, media_type = predictor.image(image_id)
        except (LookupError, FileNotFoundError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except OSError as exc:
            return JSONResponse({"error": f"the lake's storage did not answer: {str(exc).splitlines()[0][:200]}"}, status_code=503)
        return Response(content, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/")
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
