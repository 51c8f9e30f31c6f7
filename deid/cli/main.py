"""The ``deid`` command: a click group whose commands parse options, call one library function and report."""

from __future__ import annotations

import logging
import sys

import click

from .. import __version__
from ..errors import DeidError


class _Group(click.Group):
    """Turns ``DeidError`` into a one-line message and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DeidError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="deid")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details to stderr.")
def main(verbose: bool) -> None:
    """deid: find every face, replace it with a synthetic person of the same age and gender, blend it back."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def _register() -> None:
    from .convert import convert
    from .dataset import dataset
    from .directions import directions
    from .eval import eval_group
    from .faces import faces
    from .generate import generate
    from .invert import invert
    from .photo import photo
    from .serve import serve
    from .train import data, train
    from .video import video

    for cmd in (convert, dataset, directions, eval_group, faces, generate, invert, photo, serve, data, train, video):
        main.add_command(cmd)


_register()
