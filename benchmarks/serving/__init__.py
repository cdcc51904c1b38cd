"""The serving benchmark: the demo against ``transformers serve`` (see ``__main__``)."""
