"""`python -m serving [--conf FILE] [--set KEY=VALUE] [--host H] [--port P]`: the prediction service.

The options are the stages' (pipelines/cli.py); --host and --port override serving.host and
serving.port for one start. Without a published classifier the service still starts: /health
answers 503 saying to run `make run`, and the classifier is loaded as soon as one is published.
"""

from __future__ import annotations

import socket
import sys

from pipelines.options import EXIT_INPUT, load_stage_conf, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("The Fruits! prediction service and its web page (docs/serving.md).")
    parser.add_argument("--host", help="address to listen on (default: conf serving.host)")
    parser.add_argument("--port", type=int, help="port to listen on (default: conf serving.port)")
    args = parser.parse_args(argv)
    conf = load_stage_conf(args)
    host = args.host or conf["serving.host"]
    port = conf["serving.port"] if args.port is None else args.port
    if not 0 <= port <= 65535:
        print(f"serving: port {port} is not a TCP port (0-65535): fix --port or serving.port", file=sys.stderr)
        return EXIT_INPUT

    try:  # bound first: a busy port is one line naming the setting, before the model is loaded
        listener = socket.create_server((host, port))
    except OSError as exc:
        print(f"serving: cannot listen on {host}:{port} ({exc.strerror or exc}): choose another --port or serving.port",
              file=sys.stderr)
        return EXIT_INPUT

    import uvicorn

    from serving.app import create_app

    app = create_app(conf)
    service = app.state.service
    url = f"http://{host}:{listener.getsockname()[1]}/"  # --port 0: the port the system chose
    if service.predictor is None:
        print(f"serving: no classifier loaded yet ({service.problem}); /health answers 503 until one is published",
              file=sys.stderr, flush=True)
    else:
        versions = service.predictor.versions
        print(f"serving: classifier {versions['classifier_version']} (gold model {versions['gold_model_version']}, "
              f"{versions['lake_images']} lake images)", flush=True)
    print(f"serving: listening on {url}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listener])
    return 0


if __name__ == "__main__":
    sys.exit(main())
