"""The vqcodec command-line program (installed as ``vqcodec_cli``)."""
