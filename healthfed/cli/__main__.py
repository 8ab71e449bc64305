"""``python -m healthfed.cli``: the same as the ``healthfed`` console script."""

from healthfed.cli import main

main()
