"""`make demo`'s pure parts: which images the lake is prepared from and which arrive live, its
queries, its state between `--prepare` and the live runs, its conf (one application, classifier
included); and the one new server mechanism it needs: a MinIO data folder served again."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from deploy.settings import load_settings
from deploy.spark_args import CHAIN_JOB, jobs, stage_arguments
from pipelines.config import load_conf
from rehearsal import demo, stand_ins
from rehearsal.demo import DemoState, Transcript
from rehearsal.s3_server import ENDPOINT_ENV, LocalS3Server, new_bucket_name, patched_environ
from rehearsal.stand_ins import RehearsalError
from tests.s3_binary import server_binary_or_skip


def sample_tree(root: Path, layout: dict[str, int]) -> list[Path]:
    files = []
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True)
        for index in range(count):
            path = root / folder / f"{index:03d}_100.jpg"
            path.write_bytes(b"x")
            files.append(path)
    return files


def test_prepared_files_spread_through_the_training_and_test_images_of_each_label(tmp_path):
    files = sample_tree(tmp_path, {"Training/Kiwi": 5, "Test/Kiwi": 4, "Training/Lemon": 5, "Test/Lemon": 3, "Training/Fig": 2})
    grouped = demo.labelled(files, tmp_path)
    chosen = demo.prepared_files(grouped, ["Kiwi", "Lemon"], training=2, test=1)
    assert [p.relative_to(tmp_path).as_posix() for p in chosen] == [
        "Training/Kiwi/000_100.jpg", "Training/Kiwi/002_100.jpg", "Test/Kiwi/000_100.jpg",
        "Training/Lemon/000_100.jpg", "Training/Lemon/002_100.jpg", "Test/Lemon/000_100.jpg",
    ]
    # A label with no Test images cannot be judged by the classifier's gate: refused, named.
    with pytest.raises(RehearsalError, match="Test/Fig"):
        demo.prepared_files(grouped, ["Kiwi", "Fig"], training=1, test=1)


def test_new_photos_skip_what_the_bucket_holds_and_alternate_between_fruits(tmp_path):
    files = sample_tree(tmp_path, {"Test/Kiwi": 3, "Test/Lemon": 3, "Training/Kiwi": 3})
    grouped = demo.labelled(files, tmp_path)
    taken = {"Test/Kiwi/000_100.jpg", "Test/Lemon/000_100.jpg", "Test/Lemon/001_100.jpg"}
    chosen = demo.new_photos(grouped, ["Kiwi", "Lemon"], 3, taken, tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in chosen] == [
        "Test/Kiwi/001_100.jpg", "Test/Lemon/002_100.jpg", "Test/Kiwi/002_100.jpg",
    ]
    with pytest.raises(RehearsalError, match="only 3 Test photos.*--prepare"):
        demo.new_photos(grouped, ["Kiwi", "Lemon"], 4, taken, tmp_path)


def test_the_queries_select_the_run_s_rows_in_the_catalog_s_database():
    statements = demo.sql_statements("demo-20261202T150000Z", "fruits")
    counts, rows = (statement for _, statement in statements)
    for table in ("bronze", "silver", "gold", "classifier"):
        assert f"FROM fruits.{table}" in counts
    assert counts.count("count_if(run_id = 'demo-20261202T150000Z')") == 4
    assert "slice(g.pca, 1, 4)" in rows and "c.prediction" in rows and "WHERE g.run_id = 'demo-20261202T150000Z'" in rows


def test_the_budget_verdict():
    assert demo.fits(118.4, 120) == "118 s for the live part: fits the 120 s slot"
    assert demo.fits(121, 120) == "121 s for the live part: does NOT fit the 120 s slot"


def test_the_state_is_private_and_a_missing_or_unfinished_prepare_is_named(tmp_path):
    with pytest.raises(RehearsalError, match=r"make demo ARGS=--prepare"):
        DemoState.load(tmp_path)
    state = DemoState(bucket="fruits-demo-x", server={"access_key": "a", "secret_key": "s", "kms_secret": "k"})
    state.save(tmp_path)
    assert stat.S_IMODE((tmp_path / demo.STATE_FILE).stat().st_mode) == 0o600
    with pytest.raises(RehearsalError, match="did not finish"):
        DemoState.load(tmp_path)
    state.job_keys, state.archive, state.images, state.runs = ("fruits-job", "secret"), "/x.tar.gz", 112, ["demo-prepare-1"]
    state.save(tmp_path)
    assert DemoState.load(tmp_path) == state


def test_the_transcript_keeps_each_line_with_its_time(capsys):
    out = Transcript()
    out("demo [1/3] new photos")
    out("demo [1/3] done in 0.4 s")
    assert capsys.readouterr().out == "demo [1/3] new photos\ndemo [1/3] done in 0.4 s\n"
    assert [line for _, line in out.lines] == ["demo [1/3] new photos", "demo [1/3] done in 0.4 s"]
    assert out.text().splitlines()[0].endswith("s] demo [1/3] new photos")


def test_the_demo_overlay_runs_the_chain_with_the_classifier_as_one_application(aws_env):
    local = load_conf(["conf/local.yaml"])
    with patched_environ({ENDPOINT_ENV: "http://127.0.0.1:9000"}):
        s = load_settings([*stand_ins.AWS_CONFS, local["demo.aws_conf"]])
    assert jobs(s) == [CHAIN_JOB]
    arguments = stage_arguments(stand_ins.run_settings(s, ("run.id=demo-1",)), CHAIN_JOB)
    assert arguments[:3] == ["run", "--jobs", "bronze,silver,gold,classifier,catalog"]
    assert arguments[-2:] == ["--set", "run.id=demo-1"]
    assert "conf/demo.yaml" in arguments
    # The prepared lake's labels are the sample's (each with Training and Test images).
    source = Path(local.path("input.path"))
    if source.is_dir():
        from rehearsal import sample

        grouped = demo.labelled(sample.image_files(source, local["input.extensions"]), source)
        demo.prepared_files(grouped, local["demo.labels"], local["demo.training_per_label"], local["demo.test_per_label"])


@pytest.mark.s3
def test_a_kept_home_serves_its_encrypted_objects_and_users_again(tmp_path):
    """`--prepare` stops its server; the live run starts one on the same folder with the same secrets."""
    binary = server_binary_or_skip()
    bucket, key_name = new_bucket_name(), "arn:aws:kms:fruits-rehearsal"
    with LocalS3Server("eu-west-3", binary, kms_key_name=key_name, home=tmp_path / "s3") as first:
        first.create_bucket(bucket)
        keys = first.add_user("reader", {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"arn:aws:s3:::{bucket}/*"]}]})
        first.client().put_object(Bucket=bucket, Key="lake/a", Body=b"kept", ServerSideEncryption="aws:kms", SSEKMSKeyId=key_name)
        secrets = first.home_secrets()
    assert (tmp_path / "s3" / "data").is_dir()  # kept at stop
    with LocalS3Server("eu-west-3", binary, kms_key_name=key_name, home=tmp_path / "s3", secrets_of_home=secrets) as again:
        assert again.client(keys=keys).get_object(Bucket=bucket, Key="lake/a")["Body"].read() == b"kept"
