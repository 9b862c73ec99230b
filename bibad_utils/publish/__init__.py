"""Publishing a run: execute the notebooks (``runner``, with ``notebooks`` and the validity ``keys``), build
the book (``book``, offline scripts in ``vendor``), check its pages (``pagecheck``, ``page_text``) and
publish a summary in the README (``readme``). The ``bibad`` command line is :mod:`bibad_utils.cli`."""
