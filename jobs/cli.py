"""``ssl-hpc``: one command line over the jobs in this package (the doors of the library).

Each job module defines ``add_arguments(parser)`` and ``run(args) -> int``; its docstring's
first line is the command's summary. Errors the user can fix (SslHpcError) print one line
naming the file, object or option and exit 2; nothing else is caught.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from ssl_hpc import __version__
from ssl_hpc.errors import SslHpcError

#: command name -> module; kept in data-flow order for ``--help``.
COMMANDS = {
    "synth": "jobs.synth",
    "ingest": "jobs.ingest",
    "info": "jobs.info",
    "show": "jobs.show",
    "pretrain": "jobs.pretrain",
    "tune": "jobs.tune",
    "embed": "jobs.embed",
    "search": "jobs.search",
    "probe": "jobs.probe",
    "finetune": "jobs.finetune",
    "report": "jobs.report",
    "export": "jobs.export",
    "serve": "jobs.serve",
}


def build_parser(commands: list[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser, with one subparser per job in `commands` (default: all)."""
    parser = argparse.ArgumentParser(
        prog="ssl-hpc",
        description="Self-supervised representation learning on astronomical survey images.",
    )
    parser.add_argument("--version", action="version", version=f"ssl-hpc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in commands or COMMANDS:
        module = importlib.import_module(COMMANDS[name])
        doc = (module.__doc__ or "").strip()
        p = sub.add_parser(
            name,
            help=" ".join(doc.split("\n\n")[0].split()) if doc else name,
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _named_command(argv: list[str]) -> list[str] | None:
    """[the command] when argv names one, so that only its module is imported (a job's
    imports, torch and the rest, cost seconds that every rank and Slurm step would pay for
    all the jobs); None for the top-level help, --version or a mistyped command."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return [first] if first in COMMANDS else None


#: the errnos of a path the filesystem refuses (--out under a file, on a read-only or
#: full disk, through a link loop): said in one line naming the path, not a traceback
PATH_ERRNOS = {
    errno.ENOENT,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ELOOP,
    errno.ENAMETOOLONG,
    errno.EEXIST,
    errno.ENOSPC,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ssl-hpc`` console script."""
    parser = build_parser(_named_command(sys.argv[1:] if argv is None else argv))
    args, extra = parser.parse_known_args(argv)
    # argparse hands every positional its strings in one go, so key=value overrides after
    # an option (`show SURVEY --n 3 seed=4`) come back unparsed: they are still overrides
    if extra and hasattr(args, "overrides") and all("=" in e and e[0] != "-" for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args._run(args) or 0)
    except SslHpcError as e:
        print(f"ssl-hpc {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.filename is None or e.errno not in PATH_ERRNOS:
            raise
        paths = f"{e.filename} -> {e.filename2}" if e.filename2 else e.filename
        print(f"ssl-hpc {args.command}: error: {paths}: {e.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ssl-hpc {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
