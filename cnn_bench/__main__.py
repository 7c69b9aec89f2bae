"""``cnn-bench`` (and ``python -m cnn_bench``): SIGTERM is handled before the slow imports.

The console script would otherwise import ``cnn_bench.cli`` (torch, Lightning: seconds)
before its ``main`` could install the handler, and a SIGTERM then ended it silently.
"""

from cnn_bench.sigterm import stop_cleanly_on_sigterm


def main() -> None:
    stop_cleanly_on_sigterm()
    from cnn_bench.cli import main as cli_main  # the slow imports

    cli_main()


if __name__ == "__main__":
    main()
