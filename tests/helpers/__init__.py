"""What several test files share: the ``run.py`` subprocess runner (:mod:`helpers.run`), a log
stream interrupted by a signal (:mod:`helpers.signalled_file`)."""
