"""The deck's evidence, captured during a live demo run (`make demo ARGS=--screenshots`).

Playwright (pinned in requirements.lock) drives Debian's Chromium, found as `make deck` finds it;
Playwright's own browser download is not used. The names are the ones docs/deck/deck.md uses:
- spark-app.png: the chain application's Jobs page, taken while the application runs (its UI lives
  only as long as its driver), refreshed every few seconds, the last capture kept;
- spark-master.png: the standalone master's page after the run: the two workers, the application;
- bucket-images.png, bucket-exports.png: the bucket as the job user's keys list it (ListObjectsV2);
  this MinIO runs without its web console (MINIO_BROWSER=off), so the page is rendered here from
  the API's answer (names, sizes, times; never an image);
- data-docs.png: the Great Expectations Data Docs index of the lake, downloaded from the bucket;
- demo-1.png .. demo-4.png: the live part's transcript, frame by frame (the fallback of the demo).
The transcript itself goes to conf demo.transcript.
"""

from __future__ import annotations

import html
import shutil
import threading
from datetime import datetime
from pathlib import Path

from pipelines.config import Conf, resolve_location
from rehearsal.s3_server import LocalS3Server
from rehearsal.spark_cluster import StandaloneCluster
from rehearsal.stand_ins import RehearsalError

# As tests/serving/test_browser.py: no background network features; Playwright adds --headless.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-proxy-server",
]
APP_REFRESH_S = 10.0
FRAME_MARKERS = ("demo: live part", "demo [2/3]", "demo [3/3]", "  -- the new photos")
NEWEST_ROWS = 18
STYLE = """
body { margin: 0; font: 20px/1.45 'DejaVu Sans', sans-serif; background: #fff; color: #222; }
header { background: #c72e49; color: #fff; padding: 18px 36px; }
header h1 { margin: 0; font-size: 30px; } header p { margin: 4px 0 0; font-size: 18px; opacity: .9; }
main { display: flex; gap: 36px; padding: 20px 36px; }
section { flex: 1; } h2 { font-size: 22px; margin: 0 0 10px; }
table { border-collapse: collapse; width: 100%; font-size: 17px; }
td, th { text-align: left; padding: 3px 10px; border-bottom: 1px solid #ddd; white-space: nowrap; }
td.wrap { white-space: normal; word-break: break-all; }
th { background: #f1f1f1; } td.num { text-align: right; } tr.new td { background: #fff3c4; font-weight: bold; }
code { font: 16px 'DejaVu Sans Mono', monospace; }
"""
TERMINAL_STYLE = """
body { margin: 0; background: #1e1e1e; color: #e6e6e6; font: 17px/1.35 'DejaVu Sans Mono', monospace; }
.bar { background: #3a3a3a; color: #ccc; padding: 8px 20px; font: 17px 'DejaVu Sans', sans-serif; }
pre { margin: 0; padding: 14px 20px; white-space: pre-wrap; word-break: break-all; }
.t { color: #7a7a7a; } .step { color: #7fd3ff; font-weight: bold; } .ok { color: #8ae28a; }
"""


def find_chromium() -> str:
    from scripts.render_deck import find_chromium as find

    try:
        return find(None)
    except FileNotFoundError as exc:
        raise RehearsalError(f"{exc}; the screenshots need it") from None


# ---------------------------------------------------------------- pages rendered here (pure, unit-tested)


def listing_page(title: str, subtitle: str, folders: list[tuple[str, int]], objects: list[dict], new_keys: set[str]) -> str:
    """A bucket listing: objects per folder on the left, the objects (newest first) on the right,
    the run's new ones highlighted. `objects` are ListObjectsV2 entries (Key, Size, LastModified)."""
    folder_rows = "".join(f"<tr><td><code>{html.escape(name)}/</code></td><td class=num>{count}</td></tr>" for name, count in folders)
    listed = title.split("://", 1)[-1].split("/", 1)[-1]  # the listed prefix: folders are shown below it
    object_rows = "".join(
        f"<tr class=\"{'new' if o['Key'] in new_keys else ''}\"><td class=wrap><code>{html.escape(o['Key'].rsplit('/', 1)[-1] or '(folder marker)')}</code></td>"
        f"<td class=wrap><code>{html.escape(_folder(o['Key']).removeprefix(listed.rstrip('/')).lstrip('/') or '.')}</code></td>"
        f"<td class=num>{o['Size'] / 1024:,.1f} KB</td><td>{_when(o['LastModified'])}</td></tr>"
        for o in objects
    )
    return (
        f"<!doctype html><meta charset=utf-8><style>{STYLE}</style><header><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(subtitle)}</p></header><main><section style=\"flex:0 0 34%\"><h2>Folders</h2><table>"
        f"<tr><th>prefix</th><th>objects</th></tr>{folder_rows}</table></section><section><h2>Objects, newest first</h2>"
        f"<table><tr><th>name</th><th>folder (below the listed prefix)</th><th>size</th><th>last modified (UTC)</th></tr>{object_rows}</table></section></main>"
    )


def folder_counts(keys: list[str], depth: int) -> list[tuple[str, int]]:
    """Objects per folder, the folder being the key's first `depth` parts (sorted by folder)."""
    counts: dict[str, int] = {}
    for key in keys:
        parts = key.split("/")
        folder = "/".join(parts[: min(depth, len(parts) - 1)])
        counts[folder] = counts.get(folder, 0) + 1
    return sorted(counts.items())


def frames(lines: list[tuple[float, str]]) -> list[list[tuple[float, str]]]:
    """The live part cut in four frames: the arrival of the photos, the chain, the rows per layer,
    the new photos' rows and the verdict. ValueError when a step is missing (the run failed)."""
    starts = []
    for marker in FRAME_MARKERS:
        found = next((i for i, (_, line) in enumerate(lines) if line.startswith(marker)), None)
        if found is None:
            raise ValueError(f"the transcript has no line starting {marker.strip()!r}: the live part did not complete")
        starts.append(found)
    ends = [*starts[1:], len(lines)]
    return [lines[a:b] for a, b in zip(starts, ends)]


def terminal_page(title: str, lines: list[tuple[float, str]], since: float) -> str:
    """A terminal frame: each line with its time since the live part began."""
    def row(at: float, line: str) -> str:
        kind = "ok" if " for the live part: " in line else "step" if line.startswith("demo") else ""
        return f"<span class=t>{at - since:6.1f} s</span>  <span class=\"{kind}\">{html.escape(line)}</span>"

    body = "\n".join(row(at, line) for at, line in lines)
    return f"<!doctype html><meta charset=utf-8><style>{TERMINAL_STYLE}</style><div class=bar>{html.escape(title)}</div><pre>{body}</pre>"


def _folder(key: str) -> str:
    return key.rsplit("/", 1)[0] if "/" in key else ""


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else str(value)


# ---------------------------------------------------------------- capture


class Capture:
    """Screenshots of one live run into conf demo.screenshots_dir; the browser runs only while capturing."""

    def __init__(self, local: Conf, spark_cluster: StandaloneCluster, ui_port: int, logs: Path):
        self.local, self.cluster, self.ui_port, self.logs = local, spark_cluster, ui_port, logs
        self.folder = Path(resolve_location(local["demo.screenshots_dir"]))
        self.viewport = dict(local["demo.viewport"])
        self.chromium = find_chromium()
        self.stop_app = threading.Event()
        self.app_thread: threading.Thread | None = None
        self.app_shots = 0

    def __enter__(self) -> "Capture":
        self.folder.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc) -> None:
        self._stop_app_thread()

    def _browser(self, playwright):
        return playwright.chromium.launch(executable_path=self.chromium, headless=True, args=CHROMIUM_ARGS)

    def during_application(self) -> None:
        """Capture the application's Jobs page every few seconds until `after_run` (in a thread)."""
        self.app_thread = threading.Thread(target=self._watch_application, name="spark-app-capture", daemon=True)
        self.app_thread.start()

    def _watch_application(self) -> None:
        from playwright.sync_api import Error, sync_playwright

        target, partial = self.folder / "spark-app.png", self.logs / "spark-app.partial.png"
        with sync_playwright() as playwright:
            browser = self._browser(playwright)
            try:
                page = browser.new_page(viewport=self.viewport)
                while not self.stop_app.wait(APP_REFRESH_S):
                    try:
                        page.goto(f"http://127.0.0.1:{self.ui_port}/jobs/", timeout=10_000)
                        if "Completed Jobs" not in page.content():
                            continue
                        page.screenshot(path=str(partial))
                        shutil.move(partial, target)
                        self.app_shots += 1
                    except Error:
                        continue  # not started yet, or ended: the last capture stays
            finally:
                browser.close()

    def _stop_app_thread(self) -> None:
        self.stop_app.set()
        if self.app_thread is not None:
            self.app_thread.join(timeout=60)
            self.app_thread = None

    def after_run(self, server: LocalS3Server, s, job_keys, photos: list[Path], source: Path, lines: list) -> None:
        """Everything else once the live part is over (not timed): master page, bucket, Data Docs,
        transcript and its frames."""
        from playwright.sync_api import sync_playwright

        self._stop_app_thread()
        if not self.app_shots:
            raise RehearsalError(f"no capture of the application's UI (http://127.0.0.1:{self.ui_port}/jobs/) while it ran")
        client = server.client(keys=job_keys)
        new_keys = {f"{s.input_prefix}/{p.relative_to(source).as_posix()}" for p in photos}
        pages = self.logs / "pages"
        pages.mkdir(exist_ok=True)
        images = _objects(client, s.bucket, f"{s.input_prefix}/")
        exports_prefix = f"{s.lake_prefix}/{self.local['lake.exports']}/"
        exports = _objects(client, s.bucket, exports_prefix)
        how = "listed with the job user's keys (S3 ListObjectsV2), rendered as HTML: this MinIO runs without its web console"
        (pages / "bucket-images.html").write_text(listing_page(
            f"s3://{s.bucket}/{s.input_prefix}/", f"{len(images)} images; the {len(new_keys)} new photos highlighted; {how}",
            folder_counts([o["Key"] for o in images], _depth(s.input_prefix) + 2), _newest(images), new_keys,
        ))
        (pages / "bucket-exports.html").write_text(listing_page(
            f"s3://{s.bucket}/{exports_prefix}", f"gold's CSV and Parquet exports ({len(exports)} objects); {how}",
            folder_counts([o["Key"] for o in exports], _depth(exports_prefix) + 1), _newest(exports), set(),
        ))
        docs = self.logs / "data-docs"
        docs_prefix = f"{s.lake_prefix}/{self.local['lake.reports']}/{self.local['quality.reports_dir']}/gx/data_docs/"
        for key in (o["Key"] for o in _objects(client, s.bucket, docs_prefix)):
            target = docs / key[len(docs_prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(s.bucket, key, str(target))
        if not (docs / "index.html").is_file():
            raise RehearsalError(f"no Data Docs under s3://{s.bucket}/{docs_prefix}: did the gates run?")
        live = [(at, line) for at, line in lines]
        cut = frames(live)
        since = cut[0][0][0]
        titles = ["1/4  new photos arrive in the bucket", "2/4  the chain runs on the cluster (one application)",
                  "3/4  Spark SQL: rows each layer gained", "4/4  Spark SQL: the new photos, and the time of the live part"]
        for number, (title, frame) in enumerate(zip(titles, cut), start=1):
            (pages / f"demo-{number}.html").write_text(terminal_page(f"make demo  -  {title}", frame, since))
        transcript = Path(resolve_location(self.local["demo.transcript"]))
        transcript.write_text("".join(f"[{at - since:6.1f} s] {line}\n" for at, line in live if at >= since))

        with sync_playwright() as playwright:
            browser = self._browser(playwright)
            try:
                page = browser.new_page(viewport=self.viewport)
                page.goto(f"http://127.0.0.1:{self.cluster.ui_port}/")
                page.screenshot(path=str(self.folder / "spark-master.png"))
                for name in ("bucket-images", "bucket-exports", *(f"demo-{n}" for n in range(1, 5))):
                    page.goto((pages / f"{name}.html").as_uri())
                    page.screenshot(path=str(self.folder / f"{name}.png"))
                page.goto((docs / "index.html").as_uri())
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(self.folder / "data-docs.png"))
            finally:
                browser.close()


def _depth(prefix: str) -> int:
    """Parts of a key prefix: `input/fruits-360-sample` has 2 (a listing's folders are counted below it)."""
    return len(prefix.strip("/").split("/"))


def _objects(client, bucket: str, prefix: str) -> list[dict]:
    paginator = client.get_paginator("list_objects_v2")
    return [o for page in paginator.paginate(Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])]


def _newest(objects: list[dict]) -> list[dict]:
    return sorted(objects, key=lambda o: (o["LastModified"], o["Key"]), reverse=True)[:NEWEST_ROWS]
