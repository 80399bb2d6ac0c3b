"""The prediction service: the answer of `python -m pipelines.predict` over HTTP, and a one-page front end.

`python -m serving` (serving/__main__.py) starts it; serving/app.py builds the FastAPI application
around one `pipelines.predict.Predictor`; serving/static/ holds the page (plain HTML, JS and CSS: no
build step, nothing fetched from another site). docs/serving.md says what each endpoint returns.
"""
