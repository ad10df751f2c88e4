"""``python -m vqcodec`` runs the command-line program (installed as the package ``vqcodec_cli``)."""

from vqcodec_cli.main import main

main()
