"""What several test files share: the ``run.py`` subprocess runner (:mod:`helpers.run`)."""
