"""``python -m adzoo.train`` is ``adzoo-train``."""

from adzoo.cli.train import main

if __name__ == "__main__":
    main()
