"""``python -m adzoo.eval`` is ``adzoo-eval``."""

from adzoo.cli.eval import main

if __name__ == "__main__":
    main()
