"""Erasure (pipelines/erase.py) on a lake the real chain built: after `--vacuum` the erased photo's
bytes are in no file under the lake root (every Parquet file decoded with pyarrow, every file also
searched raw for a run of its bytes no other photo has), its id is in no table, export or
quarantine, time travel cannot return it, and the audit row records the erasure without the photo
or its path.

The scan runs once before the erasure too, and must find the photo there: the check can fail.
"""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines import erase
from pipelines.layout import Layout
from tests.operations.conftest import DUPLICATE, image_rows

# Its lake (a whole chain plus a duplicate upload) takes ~4 min to build: `make test-long`; `make test`
# erases one image of a bronze and silver lake through the same command (tests/operations/test_maintain.py).
pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.long]

# Folders whose files may name the id by design: the audit of erasures, and Delta's commit logs
# (per-file min/max statistics of image_id, a 32-character prefix; never the photo).
ID_ALLOWED = ("_audit", "_delta_log")


def _values(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _values(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _values(item)
    else:
        yield value


def distinctive_piece(content: bytes, others: list[bytes], size: int = 32) -> bytes:
    """A run of `size` bytes of the photo found in no other photo of the lake (small JPEGs of flat
    colours share many runs: a piece taken anywhere could be found in another image's file)."""
    for start in range(len(content) // 4, len(content) - size):
        piece = content[start : start + size]
        if not any(piece in other for other in others):
            return piece
    raise AssertionError("no run of bytes of the photo is unique to it")


def scan(root: Path, content: bytes, piece: bytes, image_id: str) -> dict[str, list[str]]:
    """Files under `root` holding the photo (decoded Parquet values, or raw bytes) or naming the id."""
    found: dict[str, list[str]] = {"content": [], "id": []}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = str(path.relative_to(root))
        raw = path.read_bytes()
        values: list = []
        if path.suffix == ".parquet" or relative.endswith(".checkpoint.parquet"):
            values = [v for row in pq.read_table(path).to_pylist() for v in _values(row)]
        holds_content = piece in raw or any(isinstance(v, bytes) and (v == content or piece in v) for v in values)
        names_id = image_id.encode() in raw or any(isinstance(v, str) and image_id in v for v in values)
        if holds_content:
            found["content"].append(relative)
        if names_id and not any(part in ID_ALLOWED for part in Path(relative).parts):
            found["id"].append(relative)
    return found


def run_erase(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = erase.main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def erased(spark, chain_lake):
    conf = chain_lake.lake.conf
    root = Path(conf.path("lake.root"))
    uploads = ("Training/Fruit 0/0_100.jpg", DUPLICATE)  # bronze keeps one, quarantines the other
    bronze = image_rows(spark, chain_lake, "bronze")
    target = next(r for r in bronze if r["path"] in uploads)
    content = bytes(target["content"])
    piece = distinctive_piece(content, [bytes(r["content"]) for r in bronze if r["image_id"] != target["image_id"]])
    before = scan(root, content, piece, target["image_id"])
    args = chain_lake.args("erase-1")
    code, out, err = run_erase(*args, "--image-id", target["image_id"], "--vacuum", "--delete-source", "--requested-by", "dpo@example")
    after = scan(root, content, piece, target["image_id"])
    again = run_erase(*chain_lake.args("erase-2"), "--image-id", target["image_id"])
    unknown = run_erase(*chain_lake.args("erase-3"), "--image-id", "f" * 64)
    return {"target": target, "before": before, "after": after, "code": code, "out": out, "err": err,
            "again": again, "unknown": unknown, "conf": conf}


def test_the_scan_finds_the_photo_before_the_erasure(erased):
    """Control: bronze's data files hold the photo, every layer and the exports name its id."""
    assert any(f.startswith("bronze/") for f in erased["before"]["content"]), erased["before"]
    for folder in ("bronze/", "silver/", "gold/", "quarantine/", "exports/"):
        assert any(f.startswith(folder) for f in erased["before"]["id"]), (folder, erased["before"]["id"])


def test_after_vacuum_no_file_of_the_lake_holds_the_photo_or_its_id(erased):
    assert erased["code"] == 0, erased["err"]
    assert "1 image(s) erased" in erased["out"] and "vacuumed bronze, silver, gold, quarantine" in erased["out"]
    assert erased["after"] == {"content": [], "id": []}


def test_every_table_lost_exactly_the_image(spark, chain_lake, erased):
    image_id = erased["target"]["image_id"]
    for table in ("bronze", "silver", "gold", "quarantine"):
        rows = image_rows(spark, chain_lake, table)
        assert rows or table == "quarantine", table  # the other images stay (the only reject was the copy)
        assert all(r["image_id"] != image_id for r in rows), table
    assert len(image_rows(spark, chain_lake, "bronze")) == 3
    assert not (chain_lake.input / "Training/Fruit 0/0_100.jpg").exists() and not (chain_lake.input / DUPLICATE).exists()


def test_time_travel_no_longer_returns_the_photo(spark, erased):
    from delta.tables import DeltaTable

    location = Layout.from_conf(erased["conf"]).location("bronze")
    deleted_at = DeltaTable.forPath(spark, location).history().where("operation = 'DELETE'").first()["version"]
    with pytest.raises(Exception, match="(?i)not.?found|does not exist|FAILED_READ_FILE"):
        spark.read.format("delta").option("versionAsOf", deleted_at - 1).load(location).where(
            f"image_id = '{erased['target']['image_id']}'"
        ).collect()


def test_the_audit_row_says_who_and_when_never_the_content(spark, erased):
    audit = spark.read.format("delta").load(Layout.from_conf(erased["conf"]).location("erasures")).collect()
    assert len(audit) == 1
    row = audit[0].asDict()
    assert row["image_id"] == erased["target"]["image_id"] and row["requested_by"] == "dpo@example"
    assert row["rows_deleted"] == {"bronze": 1, "silver": 1, "gold": 1, "quarantine": 1} and row["vacuum"] is True
    assert not any(isinstance(v, (bytes, bytearray)) for v in row.values())
    assert erased["target"]["path"] not in str(row)


def test_erasing_again_reports_it_erased_before_and_an_unknown_id_exits_2(erased):
    code, out, err = erased["again"]
    assert code == 0, err
    assert "0 image(s) erased" in out and "already erased before: 1" in out
    code, out, err = erased["unknown"]
    assert code == 2 and "nothing was erased" in err and "Traceback" not in err


def test_a_malformed_id_exits_2_before_any_spark():
    code, _, err = run_erase("--set", f"lake.root={os.devnull}-lake", "--image-id", "not-a-hash")
    assert code == 2 and err.startswith("erase: not an image id")
