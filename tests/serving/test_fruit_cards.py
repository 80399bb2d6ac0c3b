"""Every fruit of the sample has its card (conf predict.fruit_cards), in French and in English."""

from __future__ import annotations

from pipelines.bundle import CARD_FIELDS, load_cards
from pipelines.config import load_conf


def test_every_label_of_the_sample_has_a_card(sample):
    cards = load_cards(load_conf(["conf/local.yaml"]))
    labels = sorted(folder.name for folder in (sample / "Training").iterdir() if folder.is_dir())
    assert len(labels) > 100  # the whole sample was found, not an empty folder
    missing = [label for label in labels if label not in cards]
    assert not missing, f"labels of the sample without a card in conf/fruit_cards.yaml: {missing}"
    test_labels = {folder.name for folder in (sample / "Test").iterdir() if folder.is_dir()}
    assert test_labels <= set(cards)


def test_cards_hold_both_names_a_species_and_a_family():
    cards = load_cards(load_conf(["conf/local.yaml"]))
    for label, card in cards.items():
        assert set(card) == set(CARD_FIELDS), label
        assert card["family"].endswith("aceae"), f"{label}: family {card['family']!r} is not a botanical family name"
    assert cards["Apple Braeburn"]["name_fr"] == "Pomme (Braeburn)" and cards["Kiwi"]["name_en"]
