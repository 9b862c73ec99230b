"""Publishing a run: the page check of the built book (``pagecheck``, with its text-only checks in
``page_text``). The runner, the book build, script vendoring and README publishing join this package."""
