"""`python -m pipelines.predict` on real sample photos: the answers, the JSON lines, the error lines."""

from __future__ import annotations

import json

import numpy as np

from pipelines.predict import main


def cli_options(served_lake) -> list[str]:
    return [
        "--set", f"lake.root={served_lake.conf.path('lake.root')}",
        "--set", f"silver.model_seed_dir={served_lake.conf.path('silver.model_seed_dir')}",
    ]


def test_json_lines_answer_the_good_photos_and_name_the_bad_ones(served_lake, tmp_path, capsys):
    lemon, banana = served_lake.test_photos["Lemon"], served_lake.test_photos["Banana"]
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("shopping list")
    missing = tmp_path / "absent.png"
    # two photos per model batch: the answers of the second batch still come in the order asked
    options = [*cli_options(served_lake), "--set", "silver.batch_size=2", "--json"]
    code = main([*options, str(lemon), str(not_image), str(missing), str(banana)])
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 2 and err == ""
    assert [line["photo"] for line in lines] == [str(lemon), str(not_image), str(missing), str(banana)]
    assert lines[1] == {"photo": str(not_image), "error": "not_an_image: no image decoder recognises the bytes"}
    assert lines[2] == {"photo": str(missing), "error": "no such file"}
    for line, label in ((lines[0], "Lemon"), (lines[3], "Banana")):
        assert line["top"][0]["label"] == label and len(line["top"]) == 3 and len(line["similar"]) == 5
        assert line["top"][0]["card"] is not None and line["similar"][0]["label"] == label
        # the CLI featurizes its photos in one batch, the service one by one: the same answer within 1e-5
        alone = served_lake.predictor.answer(lemon.read_bytes() if label == "Lemon" else banana.read_bytes(), line["photo"])
        assert [t["label"] for t in alone["top"]] == [t["label"] for t in line["top"]]
        np.testing.assert_allclose([t["probability"] for t in alone["top"]], [t["probability"] for t in line["top"]], atol=1e-5)
        assert [s["image_id"] for s in alone["similar"]] == [s["image_id"] for s in line["similar"]]


def test_text_output_is_a_few_lines_per_photo_and_errors_go_to_stderr(served_lake, tmp_path, capsys):
    kiwi = served_lake.test_photos["Kiwi"]
    folder = tmp_path / "a-folder"
    folder.mkdir()
    code = main([*cli_options(served_lake), str(kiwi), str(folder)])
    out, err = capsys.readouterr()
    assert code == 2
    lines = out.splitlines()
    assert lines[0] == str(kiwi) and "Kiwi" in lines[1] and "Kiwifruit / Kiwi" in lines[1] and "%" in lines[1]
    assert len(lines) == 5 and lines[4].startswith("  similar: Kiwi (Training, ")
    assert err == f"{folder}: error: is a folder, not a photo\n"
    assert main([*cli_options(served_lake), str(kiwi)]) == 0
