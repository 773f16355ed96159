"""``python -m cen_bayes.app serve|export``: collect answers in a browser, export them as a table.

    python -m cen_bayes.app serve --grids next_grids.csv --images DIR --db crowd.sqlite --port 8000
    python -m cen_bayes.app serve --grids next_grids.csv --images DIR --db crowd.sqlite --run runs/fit
    python -m cen_bayes.app export --db crowd.sqlite --out annotations.csv

With ``--run`` (a fitted Bayesian CEN: a run folder of ``python -m
inference.svi`` or a ``CEN.save`` folder) each person gets the unanswered
grid expected to teach the model most (``choose.MostInformative``); without
it, the unanswered grid with the fewest answers.

Bad input (a grids file, an image folder, a database, a port) stops with one
line on stderr and exit status 1, before anything is served. ``--port 0``
takes a free port; the first line on stdout says which (the load test and
the tests read it).
"""

from __future__ import annotations

import argparse
import os
import socket

from cen_bayes.annotations import AnnotationError
from cen_bayes.app.choose import MostInformative, fewest_answers
from cen_bayes.app.grids import GridsError, load_grids
from cen_bayes.app.store import StoreError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and status 1, like every other bad input
        self.exit(1, f"error: {message} (see {self.prog} --help)\n")


def parse_args(argv=None) -> argparse.Namespace:
    parser = _Parser(prog="python -m cen_bayes.app", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = commands.add_parser("serve", help="serve the sorting page and store answers")
    serve.add_argument("--grids", required=True, help="CSV with columns grid_id,image_id, one row per image")
    serve.add_argument("--images", required=True, help="folder holding the image files (image_id = file name)")
    serve.add_argument("--db", required=True, help="SQLite database of answers (created if absent)")
    serve.add_argument("--port", type=int, default=8000, help="0 takes a free port (default 8000)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for a network)")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument("--run", help="a fitted Bayesian CEN (run folder of python -m inference.svi, or a CEN.save "
                                     "folder): offer each person the grid expected to teach it most")
    export = commands.add_parser("export", help="write the answers as the annotation table (CSV)")
    export.add_argument("--db", required=True, help="SQLite database written by serve")
    export.add_argument("--out", required=True, help="annotation table to write (CSV)")
    return parser.parse_args(argv)


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from cen_bayes.app.store import AnswerStore
    from cen_bayes.app.web import create_app

    grids = load_grids(args.grids, args.images)
    choose = fewest_answers
    if args.run:  # before the port is taken: a bad run folder stops here, with one line
        from inference.design import DesignError, load_run  # torch and the model only when asked for

        try:
            choose = MostInformative(load_run(args.run), grids)
        except DesignError as err:
            raise SystemExit(f"error: {err}") from None
    try:  # bound here, not by uvicorn: a busy port is one line, and --port 0 can say what it got
        sock = socket.create_server((args.host, args.port))
    except OSError as err:
        reason = os.strerror(err.errno) if err.errno else err
        raise SystemExit(f"error: cannot listen on {args.host}:{args.port} ({reason})") from None
    # accepted connections inherit TCP_NODELAY: without it a keep-alive client waits ~40 ms per request
    # (Nagle's algorithm meets delayed ACKs) on a socket handed to uvicorn
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    store = AnswerStore(args.db)
    app = create_app(grids, store, choose)
    host, port = sock.getsockname()[:2]
    order = f"most informative first for {args.run}" if args.run else "fewest answers first"
    print(f"serving {len(grids)} grids ({order}) at http://{host}:{port}/ (answers to {args.db}; Ctrl-C stops)",
          flush=True)
    config = uvicorn.Config(app, log_level="info" if args.access_log else "warning", access_log=args.access_log)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        store.close()


def export(args: argparse.Namespace) -> None:
    from cen_bayes.app.store import export as write_export

    n = write_export(args.db, args.out)
    print(f"wrote {n} answers to {args.out}")


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        serve(args) if args.command == "serve" else export(args)
    except (GridsError, StoreError, AnnotationError) as err:
        raise SystemExit(f"error: {err}") from None
    except OSError as err:  # an unreadable or unwritable path: the user's to fix, in one line
        raise SystemExit(f"error: {' '.join(str(err).split())}") from None


if __name__ == "__main__":
    main()
