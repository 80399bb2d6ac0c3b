"""Offline Data Docs (CDN references -> shipped copies) and the Hadoop FileSystem tree copies."""

from __future__ import annotations

import os
import re
import time
from importlib import resources
from pathlib import Path

import pytest

from quality import docs


def test_localise_html_points_libraries_at_the_vendor_copies_and_drops_sri():
    html = (
        '<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>\n'
        '<script src="https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js" '
        'integrity="sha384-abc" crossorigin="anonymous"></script>\n'
        '<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>\n'
        '<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>\n'
        '<p>integrity="kept in text"</p>'
    )
    out = docs.localise_html(html, "../static/vendor/")

    assert '<script src="../static/vendor/jquery.min.js"></script>' in out
    assert '<script src="../static/vendor/bootstrap.min.js"></script>' in out
    assert 'href="../static/vendor/bootstrap.min.css"' in out
    assert "https://cdn.jsdelivr.net/npm/vega@5" in out  # optional extra: left as GX wrote it
    assert '<p>integrity="kept in text"</p>' in out
    assert docs.localise_html(out, "../static/vendor/") == out


def test_vendor_prefix_climbs_to_the_site_root(tmp_path):
    assert docs.vendor_prefix(tmp_path / "index.html", tmp_path) == "static/vendor/"
    page = tmp_path / "validations" / "silver_rows" / "run" / "time" / "batch.html"
    assert docs.vendor_prefix(page, tmp_path) == "../../../../static/vendor/"


def test_every_library_the_installed_gx_templates_load_is_shipped():
    """Fails when a GX upgrade changes a library URL: update quality/data_docs_assets and CDN_ASSETS."""
    templates = resources.files("great_expectations").joinpath("render/view/templates")
    urls = set()
    for name in ("js_script_imports.j2", "index_page.j2", "page.j2"):
        urls |= set(re.findall(r'(?:src|href)="(https://[^"]+)"', templates.joinpath(name).read_text()))
    optional = {u for u in urls if re.search(r"vega|font-awesome|bootstrap-dark", u)}
    libraries = {u for u in urls - optional if re.search(r"jquery|popper|bootstrap|datepicker", u)}

    assert libraries, "no library URL found in the GX templates: their layout changed"
    assert libraries <= set(docs.CDN_ASSETS), sorted(libraries - set(docs.CDN_ASSETS))
    for name in set(docs.CDN_ASSETS.values()) | {docs.CUSTOM_STYLES}:
        assert len(docs.asset_bytes(name)) > 100, name


def test_localise_site_rewrites_recent_pages_and_installs_the_vendor_files(tmp_path):
    old = tmp_path / "old.html"
    old.write_text('<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>')
    os.utime(old, (time.time() - 100, time.time() - 100))
    new = tmp_path / "validations" / "new.html"
    new.parent.mkdir()
    new.write_text('<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>')

    assert docs.localise_site(tmp_path, time.time() - 10) == [new]
    assert 'src="../static/vendor/jquery.min.js"' in new.read_text()
    assert "code.jquery.com" in old.read_text()
    assert (tmp_path / "static" / "vendor" / "bootstrap-table.min.js").stat().st_size > 1000


@pytest.mark.spark
def test_tree_copies_through_hadoop_filesystem(spark, tmp_path):
    local = tmp_path / "local"
    (local / "gx" / "data_docs").mkdir(parents=True)
    (local / "gx" / "great_expectations.yml").write_text("config")
    (local / "gx" / "data_docs" / "index.html").write_text("page")
    stale = local / "gx" / "stale.json"
    stale.write_text("old")
    os.utime(stale, (time.time() - 100, time.time() - 100))
    remote = (tmp_path / "remote").as_uri()

    assert docs.upload_tree(spark, local, remote, time.time() - 10) == 2
    assert not (tmp_path / "remote" / "gx" / "stale.json").exists()

    back = tmp_path / "back"
    assert docs.download_tree(spark, remote, back, skip_prefixes=("gx/data_docs/",)) == 1
    assert (back / "gx" / "great_expectations.yml").read_text() == "config"
    # its remote time kept: the gate copies back only what its run changed
    remote_time = (tmp_path / "remote" / "gx" / "great_expectations.yml").stat().st_mtime
    assert abs((back / "gx" / "great_expectations.yml").stat().st_mtime - remote_time) < 0.01
    assert docs.upload_tree(spark, back, remote, remote_time + 0.5) == 0  # a gate started after it was written
    assert not (back / "gx" / "data_docs").exists()
    assert docs.download_tree(spark, (tmp_path / "absent").as_uri(), back) == 0
    assert sorted(p.name for p in Path(back).rglob("*")) == ["great_expectations.yml", "gx"]
