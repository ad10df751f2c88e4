"""Click commands of the ``vqcodec`` program."""
