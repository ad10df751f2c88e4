"""The ``vqcodec`` command: every subcommand reports bad input as one line and a non-zero exit.

This folder (``cli/`` in the repository) installs as the package ``vqcodec_cli``, so it never
collides with another distribution's top-level ``cli``.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from typing import Any

import click

from vqcodec.errors import VQCodecError, VQCodecWarning


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors and interrupts into a message on stderr and exit status 1 or 130, and
    the library's warnings into one 'vqcodec: warning: ...' line each."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", VQCodecWarning)  # each file's warning, not only the first
                warnings.showwarning = functools.partial(_show_warning, warnings.showwarning)
                return fn(*args, **kwargs)
        except VQCodecError as err:
            click.echo(f"vqcodec: error: {err}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("vqcodec: interrupted", err=True)
            sys.exit(130)

    return wrapper


def _show_warning(default: Callable[..., None], message: Warning | str, category: type[Warning], *args: Any,
                  **kwargs: Any) -> None:
    """A VQCodecWarning as one line without Python's file and source line; others as Python shows them."""
    if issubclass(category, VQCodecWarning):
        click.echo(f"vqcodec: warning: {message}", err=True)
    else:
        default(message, category, *args, **kwargs)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vqcodec", prog_name="vqcodec")  # not "python -m vqcodec" when run so
def main() -> None:
    """vqcodec: a learned image codec built on VQ-VAE-2 with PixelCNN priors."""


from . import benchmark as _benchmark  # noqa: E402,F401
from . import codec as _codec  # noqa: E402,F401  (each import registers its commands)
from . import codes as _codes  # noqa: E402,F401
from . import demo as _demo  # noqa: E402,F401
from . import evaluate as _evaluate  # noqa: E402,F401
from . import export as _export  # noqa: E402,F401
from . import models as _models  # noqa: E402,F401
from . import sample as _sample  # noqa: E402,F401
from . import train as _train  # noqa: E402,F401
