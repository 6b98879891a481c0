"""Lightning glue: the joint rec + SR module and the data module."""
