"""The prediction path's pure parts: projection, softmax, neighbours, output lines, photo checks, the
bundle and export readers, the S3 options; no model, no Spark (tests/serving/ runs the model)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from pipelines import bundle as bundles
from pipelines.config import ConfError, load_conf
from pipelines.lakefiles import LakeFiles, s3_options
from pipelines.predict import PhotoError, Predictor, check_photo, json_line, main, read_photo, runtime_of, text_lines
from tests.conftest import jpeg_bytes, png_bytes
from tests.serving.lakes import export_table, synthetic_arrays, synthetic_meta, write_bundle, write_export

CARD = {"name_en": "Banana", "name_fr": "Banane", "species": "Musa acuminata", "family": "Musaceae"}


@pytest.fixture
def conf(make_conf):
    return make_conf()


# ---------------------------------------------------------------- arithmetic


def test_project_centres_scales_and_projects_in_float64():
    x = np.array([[1.0, 2.0, 5.0], [3.0, 2.0, -1.0]], dtype=np.float32)
    mean, scale = np.array([1.0, 2.0, 1.0]), np.array([2.0, 0.0, 4.0])
    components = np.array([[1.0, 0.5], [7.0, 1.0], [0.0, 2.0]])
    pca = bundles.project(x, mean, scale, components)
    # feature 2 has scale 0: centred to 0 (as Spark's StandardScaler), so its 7.0 weight never counts
    expected = np.array([[0.0 * 1 + 1.0 * 0, 0.0 * 0.5 + 1.0 * 2], [1.0 * 1 + (-0.5) * 0, 1.0 * 0.5 + (-0.5) * 2]])
    assert pca.dtype == np.float64
    np.testing.assert_allclose(pca, expected, rtol=0, atol=1e-15)


def test_project_of_one_vector_is_one_row():
    assert bundles.project(np.ones(3), np.zeros(3), np.ones(3), np.eye(3)[:, :2]).shape == (1, 2)


def test_softmax_sums_to_one_and_survives_large_logits():
    p = bundles.softmax(np.array([[1000.0, 1001.0, 999.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(p.sum(axis=1), [1.0, 1.0])
    np.testing.assert_allclose(p[1], [1 / 3] * 3)
    e = np.exp([-1.0, 0.0, -2.0])
    np.testing.assert_allclose(p[0], e / e.sum())


def test_class_probabilities_are_the_multinomial_logistic_formula():
    pca = np.array([0.5, -1.0])
    coefficients, intercepts = np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 0.0]]), np.array([0.1, 0.2, -0.3])
    logits = coefficients @ pca + intercepts
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(bundles.class_probabilities(pca, coefficients, intercepts)[0], expected, rtol=1e-12)


def test_top_classes_most_probable_first_and_ties_by_index():
    assert bundles.top_classes(np.array([0.1, 0.4, 0.1, 0.4]), 3) == [1, 3, 0]
    assert bundles.top_classes(np.array([0.7, 0.3]), 3) == [0, 1]


def test_nearest_sorts_by_distance_and_keeps_row_order_on_ties():
    matrix = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [0.0, 1.0], [10.0, 0.0]])
    rows, distances = bundles.nearest(np.array([0.0, 0.0]), matrix, 3)
    assert rows.tolist() == [0, 2, 3]
    np.testing.assert_allclose(distances, [0.0, 1.0, 1.0])
    rows, distances = bundles.nearest(np.array([3.0, 4.0]), matrix, 10)
    assert rows.tolist() == [1, 3, 2, 0, 4] and distances[0] == 0.0 and distances[-1] == pytest.approx(np.hypot(7, 4))
    assert bundles.nearest(np.zeros(2), matrix, 0)[0].size == 0


# ---------------------------------------------------------------- output


def answer(card=CARD) -> dict:
    return {
        "photo": "photos/é.jpg",
        "top": [{"label": "Banana", "probability": 0.9712, "card": card}, {"label": "Plantain", "probability": 0.02, "card": None}],
        "similar": [{"image_id": "a" * 64, "label": "Banana", "split": "Training", "path": "file:/x.jpg", "distance": 2.345}],
    }


def test_text_lines_show_the_probabilities_cards_and_neighbours():
    lines = text_lines(answer())
    assert lines[0] == "photos/é.jpg"
    assert "Banana" in lines[1] and "97.12 %" in lines[1] and "Banane" in lines[1] and "Musaceae" in lines[1]
    assert "Plantain" in lines[2] and "(no card)" in lines[2]
    assert lines[3] == "  similar: Banana (Training, 2.35)"


def test_an_error_is_one_line_naming_the_photo():
    assert text_lines({"photo": "x.png", "error": "not_an_image: no image decoder recognises the bytes"}) == [
        "x.png: error: not_an_image: no image decoder recognises the bytes"
    ]


def test_json_line_is_one_line_with_the_answer():
    line = json_line(answer())
    assert "\n" not in line and "é" in line
    assert json.loads(line) == answer()


# ---------------------------------------------------------------- photos


def test_read_photo_refuses_missing_folder_and_too_large(tmp_path):
    with pytest.raises(PhotoError, match="^no such file$"):
        read_photo(str(tmp_path / "absent.jpg"), 1000)
    with pytest.raises(PhotoError, match="folder"):
        read_photo(str(tmp_path), 1000)
    big = tmp_path / "big.jpg"
    big.write_bytes(b"x" * 1001)
    with pytest.raises(PhotoError, match="bronze.max_file_bytes=1000"):
        read_photo(str(big), 1000)
    assert read_photo(str(big), 1001) == b"x" * 1001


def test_check_photo_gives_bronze_reasons():
    with pytest.raises(PhotoError, match="^not_an_image"):
        check_photo(b"not an image at all", 10**6)
    with pytest.raises(PhotoError, match=r"^too_many_pixels: 32x24 declared, over bronze.max_image_pixels=100$"):
        check_photo(jpeg_bytes(), 100)
    gif = io.BytesIO()
    Image.new("RGB", (4, 4)).save(gif, format="GIF")
    with pytest.raises(PhotoError, match="^unsupported_format: GIF"):
        check_photo(gif.getvalue(), 10**6)
    with pytest.raises(PhotoError, match="^(undecodable|malformed_jpeg|unreadable_header)"):
        check_photo(jpeg_bytes(size=(64, 64))[:-200], 10**6)
    assert check_photo(png_bytes(), 10**6).image_format == "PNG"


def test_check_photo_keeps_the_exif_orientation_and_drops_the_exif_block():
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "PhoneMaker"
    checked = check_photo(jpeg_bytes(exif=exif.tobytes()), 10**6)
    assert checked.orientation == 6 and b"PhoneMaker" not in checked.content


def test_runtime_of_reads_the_names_silver_records():
    assert runtime_of("keras", "x").name == "keras"
    assert runtime_of("tflite", "x").name == "tflite"
    assert runtime_of("tflite-float16", "x").quantization == "float16"
    assert runtime_of("tflite-dynamic_range", "x").name == "tflite-dynamic_range"
    with pytest.raises(bundles.BundleError, match="'onnx'.*pipelines/runtimes.py"):
        runtime_of("onnx", "predictor.json")


# ---------------------------------------------------------------- bundle, export, cards


def test_no_classifier_says_where_it_looked_and_to_run_make_run(conf):
    with pytest.raises(bundles.NoClassifier, match=r"current.json\): run `make run`"):
        bundles.current_version(LakeFiles(conf), conf)


def test_current_json_must_name_a_plain_version(conf, tmp_path):
    root = tmp_path / "lake" / "_models" / "classifier"
    root.mkdir(parents=True)
    for content, problem in (("{", "not valid JSON"), ('{"classifier_version": "../x"}', "plain name"), ("[]", "plain name")):
        (root / "current.json").write_text(content)
        with pytest.raises(bundles.BundleError, match=problem):
            bundles.current_version(LakeFiles(conf), conf)


def test_bundle_round_trip_and_checks(conf):
    labels = ["Banana", "Kiwi", "Lemon"]
    arrays = synthetic_arrays(labels, 4)
    write_bundle(conf, synthetic_meta("v1", "g1", labels, 4), arrays)
    files = LakeFiles(conf)
    loaded = bundles.load_bundle(files, conf, bundles.current_version(files, conf))
    assert loaded.version == "v1" and loaded.labels == labels
    np.testing.assert_array_equal(loaded.components, arrays["components"])

    write_bundle(conf, synthetic_meta("v2", "g1", labels, 5), arrays)  # k says 5, components have 4
    with pytest.raises(bundles.BundleError, match=r"v2/predictor.npz: components has shape \(1280, 4\), expected \(1280, 5\)"):
        bundles.load_bundle(files, conf, "v2")
    write_bundle(conf, {**synthetic_meta("v3", "g1", labels, 4), "k": "4"}, arrays)
    with pytest.raises(bundles.BundleError, match="v3/predictor.json: k must be int.*make run"):
        bundles.load_bundle(files, conf, "v3")
    with pytest.raises(bundles.BundleError, match="v4 is incomplete"):
        bundles.load_bundle(files, conf, "v4")
    write_bundle(conf, synthetic_meta("v5", "g1", labels, 4), {**arrays, "intercepts": np.array([0.0, np.nan, 1.0])})
    with pytest.raises(bundles.BundleError, match="intercepts holds NaN"):
        bundles.load_bundle(files, conf, "v5")


def test_index_reads_complete_parts_only_sorted_by_image_id(conf):
    pca = np.array([[1.0, 2.0], [3.0, 4.0]])
    write_export(conf, "g:1", "r1", export_table(["b" * 64, "a" * 64], ["Kiwi", "Lemon"], ["Training", "Test"], ["file:/b.jpg", None], pca))
    write_export(conf, "g:1", "r2", export_table(["c" * 64], ["Kiwi"], ["Training"], ["file:/c.jpg"], pca[:1]), complete=False)
    write_export(conf, "g:0", "r0", export_table(["d" * 64], ["Kiwi"], ["Training"], ["file:/d.jpg"], pca[:1]))
    index = bundles.load_index(LakeFiles(conf), conf, "g:1", 2)
    assert index.image_ids == ["a" * 64, "b" * 64] and index.labels == ["Lemon", "Kiwi"]
    assert index.paths == [None, "file:/b.jpg"] and index.parts == frozenset({"run_id=r1"})
    np.testing.assert_array_equal(index.matrix, [[3.0, 4.0], [1.0, 2.0]])
    assert index.row("b" * 64) == 1 and index.row("c" * 64) is None
    with pytest.raises(bundles.BundleError, match="lacks the columns pc_3"):
        bundles.load_index(LakeFiles(conf), conf, "g:1", 3)
    with pytest.raises(bundles.BundleError, match="no complete part for model version g:2.*make run"):
        bundles.load_index(LakeFiles(conf), conf, "g:2", 2)


def test_cards_load_from_conf_and_a_bad_file_names_the_setting(tmp_path):
    cards = bundles.load_cards(load_conf(["conf/local.yaml"]))
    assert cards["Banana"]["name_fr"] == "Banane" and set(cards["Banana"]) == set(bundles.CARD_FIELDS)
    bad = tmp_path / "cards.yaml"
    bad.write_text("Kiwi: {name_en: Kiwi}\n")
    with pytest.raises(ConfError, match=r"predict.fruit_cards=.*card of 'Kiwi' needs"):
        bundles.load_cards(load_conf(["conf/local.yaml"], [f"predict.fruit_cards={bad}"]))
    with pytest.raises(ConfError, match="predict.fruit_cards=.*does not exist"):
        bundles.load_cards(load_conf(["conf/local.yaml"], [f"predict.fruit_cards={tmp_path / 'none.yaml'}"]))


def test_a_label_without_a_card_is_answered_with_card_null(conf):
    labels = ["Banana", "Mystery fruit"]
    arrays = synthetic_arrays(labels, 2)
    arrays["mean"] = np.zeros(1280)  # a zero feature vector projects to the origin
    arrays["coefficients"] = np.array([[0.0, 0.0], [1.0, 0.0]])
    arrays["intercepts"] = np.array([0.0, 50.0])
    write_bundle(conf, synthetic_meta("v1", "g1", labels, 2), arrays)
    write_export(conf, "g1", "r1", export_table(["a" * 64], ["Banana"], ["Training"], ["file:/a.jpg"], np.zeros((1, 2))))
    files = LakeFiles(conf)
    bundle = bundles.load_bundle(files, conf, "v1")
    index = bundles.load_index(files, conf, "g1", 2)
    predictor = Predictor(conf, files, bundle, index, bundles.load_cards(conf), model=None)
    result = predictor._answer("p.jpg", np.zeros(2), bundle.probabilities(np.zeros((1, 1280)))[1][0])
    assert [t["label"] for t in result["top"]] == ["Mystery fruit", "Banana"]
    assert result["top"][0]["card"] is None and result["top"][1]["card"]["name_fr"] == "Banane"
    assert result["similar"] == [{"image_id": "a" * 64, "label": "Banana", "split": "Training", "path": "file:/a.jpg", "distance": 0.0}]


# ---------------------------------------------------------------- files and command line


def test_lake_files_resolve_local_and_s3_locations(conf):
    files = LakeFiles(conf)
    assert files.resolve("file:/tmp/a%20b.jpg")[1] == "/tmp/a b.jpg"
    assert files.resolve("file:///tmp/x")[1] == "/tmp/x" and files.resolve("/tmp/x")[1] == "/tmp/x"
    with pytest.raises(ValueError, match="gs://"):
        files.resolve("gs://bucket/key")


def test_s3_options_follow_the_s3_settings():
    conf = load_conf(["conf/local.yaml"], [
        "s3.endpoint=http://127.0.0.1:9000", "s3.region=eu-west-3", "s3.path_style_access=true", "s3.access_key_env=MY_KEY",
    ])
    options = s3_options(conf, {"MY_KEY": "id", "AWS_SECRET_ACCESS_KEY": "secret"})
    assert options == {"access_key": "id", "secret_key": "secret", "region": "eu-west-3", "scheme": "http",
                       "endpoint_override": "127.0.0.1:9000", "force_virtual_addressing": False}
    aws = s3_options(load_conf(["conf/local.yaml"], ["s3.region=eu-west-3"]), {})
    assert aws == {"region": "eu-west-3", "scheme": "https"}  # default credential chain, virtual hosts


def test_predict_without_a_classifier_says_to_run_make_run(tmp_path, capsys):
    code = main(["--set", f"lake.root={tmp_path / 'lake'}", str(tmp_path / "photo.jpg")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("predict: no classifier is published") and "run `make run`" in err


def test_predict_with_an_unknown_setting_is_one_conf_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--set", "predict.topp=3", "photo.jpg"])
    assert stop.value.code == 2 and "unknown key 'predict.topp'" in capsys.readouterr().err


def test_lake_images_are_read_from_their_recorded_path_or_under_input_path(make_conf, tmp_path):
    from pipelines.images import sha256_hex
    from pipelines.predict import source_location

    photo = tmp_path / "input" / "Training" / "Kiwi" / "k 1.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(jpeg_bytes())
    conf = make_conf(tmp_path / "input")
    assert source_location(conf, "Training/Kiwi/k 1.jpg") == str(photo)
    assert source_location(conf, "s3a://b/input/x.jpg") == "s3a://b/input/x.jpg"
    assert source_location(conf, "file:/data/x.jpg") == "file:/data/x.jpg"
    with pytest.raises(FileNotFoundError, match="leaves input.path"):
        source_location(conf, "Training/../../etc/passwd")

    image_id = sha256_hex(check_photo(photo.read_bytes(), 10**6).content)
    write_bundle(conf, synthetic_meta("v1", "g1", ["Kiwi"], 2), synthetic_arrays(["Kiwi"], 2))
    write_export(conf, "g1", "r1", export_table(
        [image_id, "b" * 64], ["Kiwi", "Kiwi"], ["Training"] * 2, ["Training/Kiwi/k 1.jpg", f"file:{photo}"], np.zeros((2, 2))
    ))
    files = LakeFiles(conf)
    predictor = Predictor(conf, files, bundles.load_bundle(files, conf, "v1"), bundles.load_index(files, conf, "g1", 2),
                          {}, model=None)
    content, media_type = predictor.image(image_id)
    assert media_type == "image/jpeg" and sha256_hex(content) == image_id
    with pytest.raises(FileNotFoundError, match="changed since it was ingested"):
        predictor.image("b" * 64)  # the same file recorded under another id
    with pytest.raises(LookupError, match="not in gold"):
        predictor.image("c" * 64)
