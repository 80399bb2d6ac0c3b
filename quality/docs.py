"""Data Docs that render anywhere, and the copy of the GX project between a remote lake and local disk.

GX's Data Docs pages load jQuery, Bootstrap and bootstrap-table from public CDNs, and the index
page builds its tables with them: offline (a CI machine, an air-gapped QA laptop, a report opened
years later) the index shows empty tables. `localise_html` points those references at copies of
the same versions shipped in `quality/data_docs_assets/` (their licenses beside them) and copied
into the site's `static/vendor/`, so the reports under the lake are self-contained. References GX
only needs for optional extras (icons, charts of profiling results, the dark theme) stay as they
are: a page without them still reads correctly.

GX writes its stores through the local file system. When the lake is remote (s3a://), the gate
works in a local folder: `download_tree` brings the stores (not the rendered pages) down,
GX adds this run's results and pages, and `upload_tree` copies back the files the run changed,
all through Hadoop's FileSystem, so the same S3A settings and credentials apply as for the tables.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

from pyspark.sql import SparkSession

from pipelines import lakefs

ASSETS_PACKAGE = "quality"
ASSETS_DIR = "data_docs_assets"
VENDOR_DIR = "static/vendor"
CUSTOM_STYLES = "data_docs_custom_styles.css"

# CDN URL in GX 1.24's page templates -> file in quality/data_docs_assets (same library version).
CDN_ASSETS = {
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.min.js",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap.min.js",
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js": (
        "bootstrap-table-filter-control.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css": (
        "bootstrap-table-filter-control.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css": (
        "bootstrap-table-filter-control.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": (
        "bootstrap-datepicker.min.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": (
        "bootstrap-datepicker.min.css"
    ),
}
# Subresource-integrity attributes: they make a browser refuse a file:// copy (no CORS on file://).
_SRI = re.compile(r'\s+(?:integrity="[^"]*"|crossorigin="[^"]*")')
_TAG = re.compile(r"<(?:script|link)\b[^>]*>")


# ---------------------------------------------------------------- pure


def localise_html(html: str, vendor_prefix: str) -> str:
    """`html` with every known CDN reference replaced by `<vendor_prefix><file>` (no SRI on those tags)."""

    def rewrite(match: re.Match) -> str:
        tag = match.group(0)
        for url, name in CDN_ASSETS.items():
            if f'"{url}"' in tag:
                return _SRI.sub("", tag.replace(f'"{url}"', f'"{vendor_prefix}{name}"'))
        return tag

    return _TAG.sub(rewrite, html)


def vendor_prefix(page: Path, site_root: Path) -> str:
    """Relative URL prefix from `page` to the site's vendor folder (e.g. '../../static/vendor/')."""
    depth = len(page.relative_to(site_root).parts) - 1
    return "../" * depth + VENDOR_DIR + "/"


# ---------------------------------------------------------------- local files


def asset_bytes(name: str) -> bytes:
    """A file of quality/data_docs_assets (works from a source tree and from a --py-files zip)."""
    return resources.files(ASSETS_PACKAGE).joinpath(ASSETS_DIR, name).read_bytes()


def install_custom_styles(gx_root: Path) -> None:
    """GX includes plugins/custom_data_docs/styles/data_docs_custom_styles.css in every page."""
    target = gx_root / "plugins" / "custom_data_docs" / "styles" / CUSTOM_STYLES
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(asset_bytes(CUSTOM_STYLES))


def localise_site(site_root: Path, changed_since: float) -> list[Path]:
    """Rewrite the site's pages written since `changed_since` (epoch seconds); returns them.

    Vendor files are copied into the site on every call: a site built by an older run, or copied
    from elsewhere, then gets them too.
    """
    vendor = site_root / VENDOR_DIR
    vendor.mkdir(parents=True, exist_ok=True)
    for name in sorted(set(CDN_ASSETS.values())):
        (vendor / name).write_bytes(asset_bytes(name))
    pages = [p for p in site_root.rglob("*.html") if p.stat().st_mtime >= changed_since]
    for page in pages:
        html = page.read_text(encoding="utf-8")
        localised = localise_html(html, vendor_prefix(page, site_root))
        if localised != html:
            page.write_text(localised, encoding="utf-8")
    return pages


# ---------------------------------------------------------------- Hadoop FileSystem copies


def download_tree(spark: SparkSession, remote: str, local: Path, skip_prefixes: tuple[str, ...] = ()) -> int:
    """Copy every file under `remote` into `local`, except those whose relative path starts with one
    of `skip_prefixes`; returns the number of files copied (0 when `remote` does not exist).

    Each copy keeps the remote file's modification time: the gate then rewrites (localise_site) and
    copies back (upload_tree) only the files its own run changed, not every file it downloaded."""
    base = lakefs.qualified(spark, remote).rstrip("/") + "/"
    copied = 0
    for entry in lakefs.files(spark, remote):
        relative = entry.location[len(base):]
        if any(relative.startswith(prefix) for prefix in skip_prefixes):
            continue
        target = local / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        lakefs.download(spark, entry.location, target)
        os.utime(target, (entry.modified_ms / 1000, entry.modified_ms / 1000))
        copied += 1
    return copied


def upload_tree(spark: SparkSession, local: Path, remote: str, changed_since: float) -> int:
    """Copy the files under `local` modified since `changed_since` to the same relative paths under
    `remote` (lakefs.upload: streamed, replacing what is there)."""
    copied = 0
    for directory, _, names in os.walk(local):
        for name in names:
            source = Path(directory) / name
            if source.stat().st_mtime < changed_since:
                continue
            lakefs.upload(spark, source, f"{remote.rstrip('/')}/{source.relative_to(local).as_posix()}")
            copied += 1
    return copied
