"""The command line's model flags (``run``, ``submit``): the options and their parsing.

``--checkpoint``, ``--arch``, ``--width``, ``--plugin``, ``--kwargs`` and
``--override`` choose and describe the model; ``--override`` and ``--kwargs``
take one or more ``KEY=VALUE`` words each (:class:`PairsCommand`), so the
whole spec of a state_dict trained with the SinoLC-1 authors' code is one
flag: ``--override bands=[...] mean=[...] std=[...] classes=[...]``.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from sinolc_dist.stages.workflow import ModelChoice, parse_overrides, parse_pairs

#: Flags that take one or more ``KEY=VALUE`` words (``--override a=1 b=2``, or the flag repeated).
PAIR_FLAGS = ("--override", "--kwargs")


def spread_pairs(args: list[str]) -> list[str]:
    """``--override a=1 b=2`` → ``--override a=1 --override b=2``.

    The words after a pair flag that read ``KEY=VALUE`` (and do not start with
    ``-``) belong to it: ``run`` and ``submit`` take no positional arguments,
    so nothing else can be meant.
    """
    out: list[str] = []
    flag = None
    for arg in args:
        if arg in PAIR_FLAGS or arg.startswith(tuple(f"{f}=" for f in PAIR_FLAGS)):
            flag = arg.split("=", 1)[0]
        elif flag and not arg.startswith("-") and "=" in arg and out[-1] != flag:
            out.append(flag)  # a further KEY=VALUE word of the same flag
        elif arg.startswith("-"):
            flag = None
        out.append(arg)
    return out


class PairsCommand(click.Command):
    """A command whose ``--override``/``--kwargs`` take several ``KEY=VALUE`` words each."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Spread the pair flags' words (:func:`spread_pairs`), then parse as usual."""
        return super().parse_args(ctx, spread_pairs(args))


def model_options(fn: Callable[..., None]) -> Callable[..., None]:
    """The flags that choose and describe the model (``run`` and ``submit``)."""
    for option in reversed([
        click.option("--checkpoint", default=None,
                     help="Model weights: a sinolc checkpoint or a plain state_dict saved by the authors' "
                          "training code (.pt/.pth); overrides the workflow."),
        click.option("--arch", default=None,
                     help="Architecture of a plain state_dict: l2hnet or paraformer (the SinoLC-1 authors' "
                          "layouts). [default: the workflow's, else l2hnet]"),
        click.option("--width", type=click.IntRange(min=4), default=None,
                     help="L2HNet width (64 light, 128 normal). [default: read from the state_dict]"),
        click.option("--plugin", default=None,
                     help="Another network: package.module:factory (importable on every worker) or "
                          "torchscript."),
        click.option("--kwargs", "kwargs", multiple=True, metavar="KEY=VALUE...",
                     help="Arguments of a --plugin factory (one or more KEY=VALUE)."),
        click.option("--override", "overrides", multiple=True, metavar="KEY=VALUE...",
                     help="Model spec fields, one or more KEY=VALUE (values in YAML): bands=[red,green,blue] "
                          "mean=[...] std=[...] (0-255 scale, the file's band order), classes=[drop,1,2,...] "
                          "(legend code per output channel; drop: never chosen), "
                          "legend=sinolc|chesapeake|FILE."),
    ]):
        fn = option(fn)
    return fn


def model_choice(arch: str | None, width: int | None, plugin: str | None, kwargs: tuple[str, ...],
                 overrides: tuple[str, ...]) -> ModelChoice:
    """The parsed model flags."""
    return ModelChoice(arch, width, plugin, parse_pairs(kwargs, "--kwargs"), parse_overrides(overrides))
