"""Put the MobileNetV2 weights in the Keras cache silver reads (conf silver.keras_home), as a silver run would.

Idempotent: a cached file is used as it is; else the seed copy (silver.model_seed_dir) is copied
and checked, else the file is downloaded from silver.weights_url (when silver.download is true).
`make test` runs it so that the tests needing the weights find them (tests/conftest.py MODEL_SEED).
"""

from __future__ import annotations

import sys

from pipelines import features
from pipelines.options import load_stage_conf, stage_parser
from pipelines.silver import weights_settings


def main(argv: list[str] | None = None) -> int:
    conf = load_stage_conf(stage_parser(__doc__.splitlines()[0]).parse_args(argv))
    try:
        path, how = features.locate_weights_file(weights_settings(conf))
    except features.WeightsUnavailable as exc:
        print(f"fetch_weights: {exc}", file=sys.stderr)
        return 2
    print(f"weights {path} ({how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
