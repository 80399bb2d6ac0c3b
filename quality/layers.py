"""The layers the gates know and the order they depend on (kept free of heavy imports)."""

LAYERS = ("bronze", "silver", "gold")
# The layer each stage reads: its last validation must have passed before the stage runs.
UPSTREAM = {"silver": "bronze", "gold": "silver"}
# Reports identify an unexpected row by this column.
ROW_ID = "image_id"
