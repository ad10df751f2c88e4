"""``python -m vqcodec`` runs the command-line program."""

from cli.main import main

main()
