"""Conf loading and validation: errors name the key and the file."""

import pytest

from pipelines.config import ConfError, load_conf


def overlay(tmp_path, text, name="overlay.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_local_overlay_and_overrides(monkeypatch):
    monkeypatch.delenv("FRUITS_LAKE", raising=False)
    conf = load_conf(["conf/local.yaml"], ["lake.root=/tmp/x", "spark.shuffle_partitions=3"])
    assert conf["lake.root"] == "/tmp/x" and conf["spark.shuffle_partitions"] == 3
    assert conf["spark.master"] == "local[*]"
    assert conf.path("lake.root") == "/tmp/x"


def test_environment_interpolation(monkeypatch):
    monkeypatch.setenv("FRUITS_LAKE", "s3a://bucket/lake/")
    conf = load_conf(["conf/local.yaml"])
    assert conf.path("lake.root") == "s3a://bucket/lake"


def test_unknown_key_names_key_and_file(tmp_path):
    path = overlay(tmp_path, "lake:\n  rot: /tmp\n")
    with pytest.raises(ConfError, match=r"overlay.yaml: unknown key 'lake.rot'"):
        load_conf([path])


def test_wrong_type_names_key_and_file(tmp_path):
    path = overlay(tmp_path, "spark:\n  shuffle_partitions: many\n")
    with pytest.raises(ConfError, match=r"overlay.yaml: 'spark.shuffle_partitions' must be int"):
        load_conf(["conf/local.yaml", path])


def test_missing_value_names_key():
    with pytest.raises(ConfError, match=r"'input.path' has no value"):
        load_conf([])


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfError, match="key=value"):
        load_conf(["conf/local.yaml"], ["lake.root"])
    with pytest.raises(ConfError, match="does not exist"):
        load_conf([tmp_path / "nope.yaml"])
    with pytest.raises(ConfError, match=r"--set spark.extra: 'spark.extra' must be a mapping"):
        load_conf(["conf/local.yaml"], ["spark.extra=3"])


def test_free_form_map_and_unset_env_var(tmp_path, monkeypatch):
    conf = load_conf(["conf/local.yaml"], ["spark.extra={spark.sql.ansi.enabled: 'true'}"])
    assert conf["spark.extra"] == {"spark.sql.ansi.enabled": "true"}
    monkeypatch.delenv("NOPE_VAR", raising=False)
    path = overlay(tmp_path, "lake:\n  root: ${NOPE_VAR}\n")
    with pytest.raises(ConfError, match="NOPE_VAR"):
        load_conf(["conf/local.yaml", path])


def test_s3a_retry_settings_come_from_conf_and_default_to_hadoop(monkeypatch):
    """Null retry keys leave Hadoop's defaults; set ones map to the fs.s3a.* names the docs quote."""
    from pipelines.session import s3a_settings

    monkeypatch.delenv("FRUITS_LAKE", raising=False)

    defaults = s3a_settings(load_conf(["conf/local.yaml"]), environ={})
    assert not [k for k in defaults if "retry" in k or "attempts" in k or "establish" in k]
    fail_fast = load_conf(
        ["conf/local.yaml"],
        ["s3.attempts_maximum=1", "s3.retry_limit=2", "s3.retry_interval=250ms", "s3.connection_establish_timeout=5s"],
    )
    settings = s3a_settings(fail_fast, environ={})
    assert {k: v for k, v in settings.items() if k.split("fs.s3a.")[1] in (
        "attempts.maximum", "retry.limit", "retry.interval", "connection.establish.timeout")} == {
        "spark.hadoop.fs.s3a.attempts.maximum": "1",
        "spark.hadoop.fs.s3a.retry.limit": "2",
        "spark.hadoop.fs.s3a.retry.interval": "250ms",
        "spark.hadoop.fs.s3a.connection.establish.timeout": "5s",
    }
