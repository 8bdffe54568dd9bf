"""Hydra finds sweepers only in the ``hydra_plugins`` namespace; the search itself is :mod:`adzoo.search`."""
