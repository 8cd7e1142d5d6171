"""`python -m hilas.search.cli`: the `hilas` command."""

from hilas.search.cli.main import main

main()
