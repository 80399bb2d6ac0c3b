"""The reference: the seed notebook's featurization, reimplemented faithfully to measure silver against.

The project's seed notebook copied Databricks' example "Featurization for transfer learning"
(docs.databricks.com/.../transfer-learning-tensorflow.html: `model_fn`, `preprocess`,
`featurize_series`, `featurize_udf`), swapping ResNet50 for MobileNetV2 and building the model
from the ImageNet weights file in every task instead of broadcasting them. Kept as it was,
because it is what silver must beat:

- `featurize_udf` is a Scalar-Iterator pandas UDF (`PandasUDFType.SCALAR_ITER`) whose first act in
  every task is `model_fn()`: `MobileNetV2(weights="imagenet", include_top=False, pooling="avg")`,
  which loads the h5 file from the Keras cache ($KERAS_HOME/models) each time; nothing is
  broadcast and nothing is kept between tasks;
- each image is `Image.open(...).resize([224, 224])` (Pillow's default filter, no orientation, no
  alpha handling), `img_to_array`, then MobileNetV2's `preprocess_input`;
- each Arrow batch goes to `model.predict` whole, with `maxRecordsPerBatch` = 1024 and the
  images read by the binaryFile source, repartitioned to 16 and written with their features as
  Parquet (the example's settings, `bench.reference_arrow_batch_rows` and
  `bench.reference_partitions`); TensorFlow keeps its default thread pools.

Deviations, none of which changes the computation: `verbose=0` on `predict` (its progress bars
would fill the worker logs), Keras 3 import paths, an accumulator counting the models built, and
`weights=random` (tests only) building the same model without the file.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pandas as pd
from PIL import Image
from pyspark.sql import SparkSession
from pyspark.sql.functions import PandasUDFType, col, pandas_udf

ARROW_BATCH_KEY = "spark.sql.execution.arrow.maxRecordsPerBatch"


def make_featurize_udf(weights: str | None, models_built):
    """The notebook's UDF; `weights` is "imagenet" (the reference) or None (tests), `models_built` an accumulator."""

    def model_fn():
        """MobileNetV2 without its classifier, pooled to 1280 features, loaded from the weights file."""
        from keras.applications.mobilenet_v2 import MobileNetV2

        models_built.add(1)
        return MobileNetV2(weights=weights, include_top=False, pooling="avg")

    def preprocess(content):
        """Preprocesses raw image bytes for prediction."""
        from keras.applications.mobilenet_v2 import preprocess_input
        from keras.utils import img_to_array

        img = Image.open(io.BytesIO(content)).resize([224, 224])
        arr = img_to_array(img)
        return preprocess_input(arr)

    def featurize_series(model, content_series):
        """Featurize a pd.Series of raw images using the input model; returns a pd.Series of features."""
        batch = np.stack(content_series.map(preprocess))
        preds = model.predict(batch, verbose=0)
        output = [p.flatten() for p in preds]
        return pd.Series(output)

    @pandas_udf("array<float>", PandasUDFType.SCALAR_ITER)
    def featurize_udf(content_series_iter):
        model = model_fn()
        for content_series in content_series_iter:
            yield featurize_series(model, content_series)

    return featurize_udf


def run_reference(
    spark: SparkSession, input_path: str, output_path: str, partitions: int, arrow_batch_rows: int, weights: str | None
) -> dict:
    """Read the images, featurize them the notebook's way, write Parquet; the images, seconds and models built."""
    models_built = spark.sparkContext.accumulator(0)
    featurize_udf = make_featurize_udf(weights, models_built)
    spark.conf.set(ARROW_BATCH_KEY, str(arrow_batch_rows))
    started = time.perf_counter()
    images = (
        spark.read.format("binaryFile")
        .option("pathGlobFilter", "*.jpg")
        .option("recursiveFileLookup", "true")
        .load(input_path)
    )
    features_df = images.repartition(partitions).select(
        col("path"), col("content"), featurize_udf("content").alias("features")
    )
    features_df.write.mode("overwrite").parquet(output_path)
    seconds = time.perf_counter() - started
    written = spark.read.parquet(output_path).count()
    return {
        "images": written,
        "seconds": round(seconds, 2),
        "images_per_s": round(written / seconds, 2),
        "partitions": partitions,
        "arrow_batch_rows": arrow_batch_rows,
        "models_built": models_built.value,
    }
